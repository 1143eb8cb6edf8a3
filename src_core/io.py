"""Reading and writing images and the files that travel with a result."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DIPError

DATA_DIR = Path(__file__).resolve().parent / "data"


def read_image(path) -> np.ndarray:
    """Read PNG/JPEG/TIFF (via imageio) or .npy, with a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DIPError(f"image file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as exc:  # the reader libraries raise many types
        raise DIPError(f"could not read image {path}: {exc}") from None


def write_image(path, image: np.ndarray) -> Path:
    """Write an image; float data in [0, 1] is stored as 8-bit for PNG/JPEG."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(image)
    if path.suffix.lower() == ".npy":
        np.save(path, data)
        return path
    if path.suffix.lower() in (".png", ".jpg", ".jpeg") and data.dtype.kind == "f":
        data = (np.clip(data, 0, 1) * 255 + 0.5).astype(np.uint8)
    if data.dtype == bool:
        data = data.astype(np.uint8) * 255
    iio.imwrite(path, data)
    return path


def data_path(name: str) -> Path:
    """Path of an image shipped with the package, e.g. ``data_path('table1/barbara.png')``."""
    path = DATA_DIR / name
    if not path.is_file():
        raise DIPError(f"no shipped image {name!r} (looked in {path.parent}).")
    return path


def load_sample(name: str) -> np.ndarray:
    """A shipped image as an array, e.g. ``load_sample('dip/kate.png')``."""
    return read_image(data_path(name))
