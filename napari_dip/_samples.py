"""Sample data (File > Open Sample > Deep Image Prior) and the "Random mask" command.

Everything is shipped with the package or computed, nothing is downloaded.
Each sample brings its mask and/or clean reference, tagged in the layers'
metadata so the widget picks them for the image on its own.  Labels follow
the plugin's convention: painted (1) = missing, to fill.
"""

from typing import Annotated

import numpy as np
from napari.layers import Image
from napari.types import LayerDataTuple

import src_core

from ._capture import MASK_FOR_KEY, REFERENCE_FOR_KEY, TASK_FOR_KEY, random_mask_labels


def _sample(name: str, corrupted: np.ndarray, missing: np.ndarray | None,
            clean: np.ndarray | None, mask_name: str, task: str, **image_kwargs) -> list:
    """Reference first (hidden), then the image (tagged with the task it was made for, which
    the widget then selects), then the mask on top."""
    layers = []
    if clean is not None:
        layers.append((clean, {"name": f"{name.split(' (')[0]} clean (reference)",
                               "visible": False, "metadata": {REFERENCE_FOR_KEY: name},
                               **image_kwargs}, "image"))
    layers.append((corrupted, {"name": name, "metadata": {TASK_FOR_KEY: task}, **image_kwargs},
                   "image"))
    if missing is not None:
        layers.append((missing.astype(np.uint8), {"name": mask_name, "opacity": 0.5,
                                                  "metadata": {MASK_FOR_KEY: name}}, "labels"))
    return layers


def kate_sample() -> list:
    """The paper's text-inpainting photo (Fig. 7 top): the photo with the text removed, the
    text mask (painted = to fill) and the clean photo as a hidden reference."""
    clean = src_core.load_sample("dip/kate.png")
    observed = src_core.load_mask(src_core.data_path("dip/kate_mask.png"))
    corrupted = clean * observed[..., None].astype(clean.dtype)
    return _sample("kate (text-corrupted)", corrupted, ~observed, clean, "kate mask", "inpaint")


def house_sample() -> list:
    """Table 1's setting: a grayscale photo with 50% of its pixels missing (Bernoulli,
    seed 0), the missing pixels as a mask and the clean photo as a hidden reference."""
    clean = src_core.load_sample("table1/house.png")
    observed = src_core.bernoulli_mask(clean.shape, 0.5, seed=0)
    corrupted = np.where(observed, clean, 0).astype(clean.dtype)
    return _sample("house (50% missing)", corrupted, ~observed, clean, "house missing pixels", "inpaint")


def synthetic_cells(shape=(256, 256), frames: int | None = None, seed: int = 0,
                    photons: float = 40.0):
    """Fluorescence-like cells (bright nuclei in dimmer cytoplasm) with Poisson shot noise
    and camera read noise, as uint16 with a camera offset of 100.

    Returns ``(noisy, clean)``; ``clean`` is the expected value (noise-free), so a
    denoising run gets a true PSNR.  With ``frames`` the cells drift slowly: a
    (T, Y, X) time-lapse.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    n = max(6, int(h * w / 1600))
    centres = rng.uniform([0.06 * h, 0.06 * w], [0.94 * h, 0.94 * w], size=(n, 2))
    radii = rng.uniform(0.03, 0.055, size=n) * min(h, w)
    elong = rng.uniform(1.0, 1.6, size=n)
    angles = rng.uniform(0, np.pi, size=n)
    bright = rng.uniform(0.35, 0.7, size=n)
    velocity = rng.normal(0, 0.004 * min(h, w), size=(n, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def frame(t: int) -> np.ndarray:
        img = np.zeros(shape, np.float32)
        for (cy, cx), r, e, a, b, (vy, vx) in zip(centres, radii, elong, angles, bright, velocity):
            cy, cx = cy + vy * t, cx + vx * t
            dy, dx = yy - cy, xx - cx
            u = (dx * np.cos(a) + dy * np.sin(a)) / (r * e)
            v = (-dx * np.sin(a) + dy * np.cos(a)) / r
            d = np.sqrt(u * u + v * v)
            img += b / (1.0 + np.exp((d - 1.0) * 10.0))              # cytoplasm
            img += (1.0 - b) * np.exp(-((d / 0.45) ** 2) * 2.0)      # nucleus
        return np.clip(img, 0, 1.2)

    stack = np.stack([frame(t) for t in range(frames or 1)])
    expected = 2.0 + photons * stack                                  # background + signal
    noisy = rng.poisson(expected).astype(np.float32) + rng.normal(0, 2.0, stack.shape)
    noisy = np.clip(np.rint(noisy + 100.0), 0, 65535).astype(np.uint16)
    clean = np.rint(expected + 100.0).astype(np.uint16)
    if frames is None:
        return noisy[0], clean[0]
    return noisy, clean


def cells_sample() -> list:
    """A noisy microscopy-like image (synthetic fluorescent cells, ~40 photons at the peak,
    uint16) with its noise-free version as a hidden reference: try task "denoise"."""
    noisy, clean = synthetic_cells((256, 256), seed=0)
    return _sample("noisy cells", noisy, None, clean, "", "denoise", axis_labels=("y", "x"))


def cells_timelapse_sample() -> list:
    """A small noisy time-lapse (8 x 128 x 128, uint16) for slice-by-slice restoration."""
    noisy, clean = synthetic_cells((128, 128), frames=8, seed=1)
    return _sample("noisy cells time-lapse", noisy, None, clean, "", "denoise",
                   axis_labels=("t", "y", "x"))


def random_mask(image: Image,
                missing_fraction: Annotated[float, {"min": 0.0, "max": 0.99, "step": 0.05}] = 0.5,
                seed: int = 0) -> LayerDataTuple:
    """A Labels layer with a random fraction of the image's pixels painted (to fill)."""
    if image is None:
        raise ValueError("choose an image layer first")
    labels = random_mask_labels(image, missing_fraction, seed)
    n = labels.ndim
    return (labels, {"name": f"{image.name} random mask", "opacity": 0.5,
                     "scale": tuple(image.scale)[-n:], "translate": tuple(image.translate)[-n:],
                     "metadata": {MASK_FOR_KEY: image.name}}, "labels")
