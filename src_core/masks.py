"""Masks.  Convention everywhere in the engine: 1 (True) = observed, 0 (False) = missing.

napari users paint what is damaged, so :func:`mask_from_labels` flips the
meaning: labelled pixels are the ones to fill.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import DIPError


def bernoulli_mask(shape: Sequence[int], missing_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Random mask with ``missing_fraction`` of pixels missing (True = observed).

    >>> m = bernoulli_mask((64, 64), 0.5, seed=1)
    >>> m.dtype, round(float(1 - m.mean()), 1)
    (dtype('bool'), 0.5)
    """
    if (isinstance(missing_fraction, bool) or not isinstance(missing_fraction, (int, float))
            or not 0 <= missing_fraction < 1):
        raise DIPError(f"missing_fraction must be a number in [0, 1) (got {missing_fraction!r}).")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise DIPError(f"the mask seed must be a whole number >= 0 (got {seed!r}).")
    rng = np.random.default_rng(int(seed))
    return rng.random(tuple(shape)) >= missing_fraction


def text_mask(shape: Sequence[int], texts: Iterable[tuple[str, tuple[int, int], int]],
              font_path: str | None = None) -> np.ndarray:
    """Mask with text drawn as missing pixels, like the paper's text inpainting.

    ``texts``: (text, (x, y) position of the top-left corner, font size in px).
    The font is a real TrueType font: ``font_path`` if given, else the
    scalable font that ships inside Pillow.

    >>> m = text_mask((64, 128), [("DIP", (4, 4), 30)])
    >>> bool(m.all()), bool(m.any())
    (False, True)
    """
    h, w = int(shape[0]), int(shape[1])
    canvas = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(canvas)
    for text, position, size in texts:
        try:
            font = (ImageFont.truetype(font_path, size) if font_path
                    else ImageFont.load_default(size=size))
        except (OSError, ValueError) as exc:
            raise DIPError(f"cannot use the font {font_path or 'built in'!r} at size {size!r} "
                           f"({exc}); give a TrueType (.ttf) file and a positive size.") from None
        draw.text(tuple(position), text, font=font, fill=0)
    return np.asarray(canvas) >= 128


def mask_from_labels(labels: np.ndarray, label: int | None = None) -> np.ndarray:
    """Observed-pixel mask from a label image: labelled pixels are the ones to fill.

    ``label=None`` fills every non-zero label; otherwise only that value.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise DIPError(f"labels must be integer or bool (got {labels.dtype}).")
    return labels == 0 if label is None else labels != label


def load_mask(path, observed_value: str = "white", notes: list | None = None) -> np.ndarray:
    """Read a mask image file. ``observed_value='white'``: bright = observed (the DIP files).
    A multi-page grey file (Z, Y, X) is a stack's mask, one plane for each slice.

    Any common mask file means what it shows: grey (L), grey + alpha (LA),
    RGB, RGBA, 8- or 16-bit, or 0/1 values.  Colour is reduced to its mean,
    transparency is composited over white (a stroke painted on a transparent
    layer is dark on white, as a viewer shows it), and the threshold is the
    middle of the values actually present, so a 0/1 mask, a 0/255 mask in a
    16-bit file and JPEG noise inside the holes all come out right.  What
    was assumed is appended to ``notes`` (a list) when one is given.
    """
    from .io import read_image

    if observed_value not in ("white", "black"):
        raise DIPError(f"observed_value must be 'white' or 'black' (got {observed_value!r}).")
    data = read_image(path, "mask")
    said = [] if notes is None else notes
    planes = data.ndim == 3 and data.shape[-1] > 4  # a stack's mask: (Z|T, Y, X) grey planes
    if planes:
        said.append(f"a stack of {data.shape[0]} mask planes, one for each slice")
    if data.dtype == bool:
        bright = data if data.ndim == 2 or planes else data.any(axis=-1)
        return bright if observed_value == "white" else ~bright
    if data.dtype.kind not in "iuf" or data.ndim not in (2, 3):
        raise DIPError(f"{path}: a mask is a 2D grey, grey+alpha, RGB or RGBA image, or a stack's "
                       f"grey planes (Z, Y, X) (got shape {data.shape}, dtype {data.dtype}).")
    full = float(np.iinfo(data.dtype).max) if data.dtype.kind in "iu" else 1.0
    values = data.astype(np.float64)
    if values.ndim == 3 and not planes:
        channels = values.shape[-1]
        colour = values[..., :3 if channels >= 3 else 1].mean(axis=-1)
        if channels in (2, 4):
            alpha = np.clip(values[..., -1] / full, 0.0, 1.0)
            if alpha.min() < 1.0:
                said.append("transparent pixels were composited over white (as a viewer shows them)")
            colour = colour * alpha + full * (1.0 - alpha)
        elif channels == 3 and np.ptp(values, axis=-1).max() > 0.1 * full:
            said.append("colour mask: the mean of R, G and B was used")
        values = colour
    if not np.isfinite(values).all():
        raise DIPError(f"{path}: the mask has non-finite values (NaN or inf).")
    low, high = float(values.min()), float(values.max())
    if high - low > 0:
        threshold = (low + high) / 2
        if threshold < 0.25 * full or threshold > 0.75 * full:
            said.append(f"values run from {low:g} to {high:g}: thresholded at {threshold:g}")
        between = np.abs(values - threshold) < 0.25 * (high - low)
        if between.mean() > 0.05:
            said.append(f"{between.mean():.0%} of the pixels are neither dark nor bright; this "
                        "looks like an image rather than a mask")
    else:
        threshold = full / 2
    bright = values > threshold
    return bright if observed_value == "white" else ~bright


def damaged_box(observed: np.ndarray, margin: int, min_side: int = 1,
                worth: float = 0.8) -> tuple[slice, slice] | None:
    """The (rows, columns) around every missing pixel of the last two axes, plus ``margin``.

    Restoring only this box costs its area instead of the image's while the
    network still sees ``margin`` pixels of known context around each hole;
    every axis before the last two (slices, channels) is pooled.  The box is
    grown, centred where the image allows, to at least ``min_side`` per side.
    None when nothing is missing or the box would cover more than ``worth``
    of the image (no gain then).

    >>> observed = np.ones((100, 200), bool); observed[40:50, 60:70] = False
    >>> damaged_box(observed, margin=8)
    (slice(32, 58, None), slice(52, 78, None))
    """
    missing = ~np.asarray(observed, dtype=bool)
    if missing.ndim < 2:
        raise DIPError(f"a mask has at least two axes (rows, columns); got shape {missing.shape}.")
    plane = missing.reshape(-1, *missing.shape[-2:]).any(axis=0)
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if rows.size == 0:
        return None
    box = []
    for hits, size in ((rows, plane.shape[0]), (cols, plane.shape[1])):
        start, stop = max(0, int(hits[0]) - margin), min(size, int(hits[-1]) + 1 + margin)
        short = min(min_side, size) - (stop - start)
        if short > 0:  # grow both ways, then push off the image's edge
            start -= short // 2
            stop += short - short // 2
            start, stop = (0, stop - start) if start < 0 else (start, stop)
            start, stop = (size - (stop - start), size) if stop > size else (start, stop)
        box.append(slice(start, stop))
    area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    return None if area > worth * plane.size else tuple(box)
