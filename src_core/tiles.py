"""Large 2D images in overlapping tiles, each restored by its own run and blended back.

A tile is an ordinary restoration (``src_core.restore`` on a crop), so tiles
are independent work items.  Neighbouring tiles overlap by ``overlap``
pixels and are blended with raised-cosine weights that fall from 1 to 0
across the overlap (and stay 1 at the image's own border), so no seam shows
where two runs meet.  For inpainting, a tile with no missing pixel is not
run: it passes the input through, which makes a huge image with a small
damaged region cost only the tiles around the damage.

>>> [(r.start, r.stop) for r in tile_starts(600, 256, 64)]
[(0, 256), (192, 448), (344, 600)]
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import DIPError


def tile_starts(size: int, tile: int, overlap: int) -> list[slice]:
    """Spans of ``tile`` pixels covering ``size`` with at least ``overlap`` between neighbours
    (the last one flush with the end; one span when the image is no larger than a tile)."""
    if size <= tile:
        return [slice(0, size)]
    count = math.ceil((size - overlap) / (tile - overlap))
    starts = np.linspace(0, size - tile, count).round().astype(int)
    return [slice(int(s), int(s) + tile) for s in starts]


def _ramp(length: int, spans: list[slice], index: int, overlap: int) -> np.ndarray:
    """1 inside, falling to 0 (raised cosine) across each side shared with a neighbour."""
    w = np.ones(length)
    span = spans[index]
    for neighbour, side in ((index - 1, "start"), (index + 1, "stop")):
        if not 0 <= neighbour < len(spans):
            continue
        other = spans[neighbour]
        shared = (other.stop - span.start) if side == "start" else (span.stop - other.start)
        shared = max(1, min(shared, length, overlap if overlap > 0 else shared))
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(shared) + 0.5) / shared)
        if side == "start":
            w[:shared] = np.minimum(w[:shared], ramp)
        else:
            w[length - shared:] = np.minimum(w[length - shared:], ramp[::-1])
    return w


def spans(shape_hw: tuple, tile: int, overlap: int) -> list[tuple[slice, slice]]:
    """(rows, columns) of every tile, in :func:`plan`'s order, without the weights (cheap: the
    widget counts tiles each time a field changes)."""
    rows, cols = (tile_starts(n, tile, overlap) for n in shape_hw)
    return [(r, c) for r in rows for c in cols]


def plan(shape_hw: tuple, tile: int, overlap: int) -> list[tuple[slice, slice, np.ndarray]]:
    """(rows, columns, blending weight) of every tile of an image of ``shape_hw``."""
    rows, cols = (tile_starts(n, tile, overlap) for n in shape_hw)
    out = []
    for i, r in enumerate(rows):
        wr = _ramp(r.stop - r.start, rows, i, overlap)
        for j, c in enumerate(cols):
            out.append((r, c, np.outer(wr, _ramp(c.stop - c.start, cols, j, overlap))))
    return out


def scaled(rows: slice, cols: slice, factor: int) -> tuple[slice, slice]:
    """A tile's rows and columns in an answer ``factor`` times larger (super-resolution)."""
    return slice(rows.start * factor, rows.stop * factor), slice(cols.start * factor, cols.stop * factor)


def default_overlap(tile: int, network_config) -> int:
    """A quarter of the tile, at most the network's context (beyond it, overlap buys nothing)."""
    return min(tile // 4, network_config.context())


def tiles_to_run(tiles, observed: np.ndarray | None) -> list[int]:
    """The tiles (:func:`plan`'s or :func:`spans`') that run: all of them, or, given the observed
    pixels of a mask-only task ((H, W) or (C, H, W), True = observed), those with a missing pixel."""
    if observed is None:
        return list(range(len(tiles)))
    return [i for i, (rows, cols, *_) in enumerate(tiles) if not observed[..., rows, cols].all()]


def choose_tile(config, channels: int, device: torch.device, factor: int = 1, share: float = 0.5) -> int:
    """The largest tile side (a multiple of the network's 2**scales) whose run fits in
    ``share`` of the device's free memory, by the same model that refuses a too-large run."""
    from . import speed

    amp = speed.resolve_precision(config.precision, device)
    free = speed.available_memory(device)
    multiple = config.network.multiple()
    best = max(multiple, config.network.min_size())
    side = best
    while side <= 16384:
        need = speed.estimate_memory(config.network, channels, (side * factor, side * factor), amp)
        if free is not None and need > share * free:
            break
        best = side
        side *= 2
    return best


def settle_overlap(tile, overlap, network_config, factor: int = 1) -> int:
    """The overlap to use with ``tile`` (the default when None), after checking both against the
    network (a super-resolution tile is ``factor`` times larger when it runs)."""
    if not isinstance(tile, bool) and isinstance(tile, (int, np.integer)) and overlap is None:
        overlap = default_overlap(int(tile), network_config)
    check_tiling(tile, overlap, -(-network_config.min_size() // factor))
    return overlap


def check_tiling(tile, overlap, min_size: int) -> None:
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < min_size:
        raise DIPError(f"tile must be 'auto' or a whole number of pixels >= {min_size} (the smallest "
                       f"image the network takes; got {tile!r}).")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile // 2:
        raise DIPError(f"overlap must be a whole number of pixels from 0 to under half the tile "
                       f"({tile // 2}); got {overlap!r}.")
