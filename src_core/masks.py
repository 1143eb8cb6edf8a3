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
    if not (0 <= missing_fraction < 1):
        raise DIPError(f"missing_fraction must be in [0, 1) (got {missing_fraction}).")
    rng = np.random.default_rng(seed)
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
        font = (ImageFont.truetype(font_path, size) if font_path
                else ImageFont.load_default(size=size))
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


def load_mask(path, observed_value: str = "white") -> np.ndarray:
    """Read a mask image file. ``observed_value='white'``: bright = observed (the DIP files)."""
    from .io import read_image

    data = read_image(path)
    if data.ndim == 3:
        data = data[..., :3].mean(axis=-1)
    bright = data > (np.iinfo(data.dtype).max / 2 if data.dtype.kind in "iu" else 0.5)
    if observed_value == "white":
        return bright
    if observed_value == "black":
        return ~bright
    raise DIPError(f"observed_value must be 'white' or 'black' (got {observed_value!r}).")
