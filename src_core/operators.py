"""Degradations as forward operators: what the imaging did to the clean image.

Deep Image Prior fits a network's output ``x`` so that the operator applied
to it matches the observation ``y`` on the observed pixels:

    minimise  mean( ((A(x) - y) * m)^2 )

``A`` is linear and maps the output grid to the observation grid (the
output is ``factor`` times larger along Y and X); ``m`` is the observation
mask (True = observed), which also switches off the padding the network's
grid needs.  The loop knows nothing else of the task: inpainting and random
pixels are :class:`Mask`, denoising is :class:`Identity`, super-resolution
is :class:`Downsample` (the original code's Lanczos downsampler),
deconvolution is :class:`Blur` (a point-spread function), and ``Blur(psf)
.then(Mask(m))`` is a blurred image with missing pixels.

A user's own degradation is a subclass that defines :meth:`Operator.apply`
(a differentiable torch function of a (K, C, H, W) float32 tensor) and, if
it changes the size, ``factor``; ``margin`` asks for output pixels beyond
the observed area (a blur reads its radius around every observed pixel).

>>> import torch
>>> Downsample(4).apply(torch.ones(1, 3, 32, 48)).shape
torch.Size([1, 3, 8, 12])
>>> op = Blur(gaussian_psf(1.0)).then(Downsample(2))
>>> op.factor, op.margin
(2, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DIPError


class Operator:
    """The forward model of one degradation (identity by default)."""

    #: output pixels per observed pixel, along Y and along X
    factor: int = 1
    #: output pixels the operator reads beyond the observed area, on every side
    margin: int = 0
    #: True when ``apply`` returns its input (observed pixels are output pixels)
    identity: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(K, C, H, W) output grid -> (K, C, H / factor, W / factor) observation grid."""
        raise NotImplementedError(f"{type(self).__name__} must define apply(x)")

    def loss(self, out: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Per-member data term: the mean squared residual over the observation grid,
        zero where ``observed`` is 0 (``target`` is the observation times ``observed``)."""
        return ((self.apply(out) - target) * observed).square().mean(dim=(1, 2, 3))

    @staticmethod
    def fit_psnr(loss: float, observed_fraction: float) -> float:
        """PSNR of the fit on the observed pixels alone, from the data term of one member."""
        return psnr_from_mse(loss / max(observed_fraction, 1e-12))

    def output_shape(self, observation_shape: tuple) -> tuple:
        """(C, H, W) of the clean image for an observation of (C, h, w)."""
        c, h, w = observation_shape
        return c, h * self.factor, w * self.factor

    def check(self, observation_shape: tuple) -> None:
        """Raise a DIPError if an observation of this (C, h, w) shape cannot come from this operator."""

    def to(self, device) -> "Operator":
        """This operator with its tensors on ``device`` (called once, before the loop)."""
        return self

    def describe(self) -> dict:
        """What the operator is, for histories and checkpoint fingerprints."""
        return {"operator": type(self).__name__}

    def then(self, other: "Operator") -> "Compose":
        """This degradation followed by ``other``, e.g. ``Blur(psf).then(Mask(mask))``."""
        return Compose(self, other)

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "operator")
        return f"{type(self).__name__}({extra})"


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error on data in [0, 1] whose peak-to-peak range counts as
    ``peak`` (inf for 0, NaN for NaN)."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def fingerprint_terms(operator: Operator) -> list:
    """What an operator adds to a checkpoint's fingerprint: nothing for the identity, so
    checkpoints written before operators existed stay valid."""
    return [] if isinstance(operator, Identity) else [operator.describe()]


class Identity(Operator):
    """Every output pixel observed directly (denoising)."""

    identity = True

    def apply(self, x):
        return x


class Mask(Operator):
    """Only some pixels observed (inpainting, random pixels); ``mask``: True = observed.

    The mask is data, not arithmetic: the engine takes it out of the
    operator (:func:`split_mask`) and checks it like a mask given on its own.
    """

    identity = True

    def __init__(self, mask):
        self.mask = np.asarray(mask)

    def apply(self, x):
        return x

    def describe(self):
        return {"operator": "Mask", "observed_fraction": round(float(np.mean(self.mask.astype(bool))), 6)}


class Compose(Operator):
    """Several degradations in order (the first acts on the clean image)."""

    def __init__(self, *operators: Operator):
        if not operators:
            raise DIPError("Compose needs at least one operator.")
        for op in operators:
            _check_operator(op)
        self.operators = tuple(op for o in operators
                               for op in (o.operators if isinstance(o, Compose) else (o,)))
        self.factor = math.prod(op.factor for op in self.operators)
        scale, margin = 1, 0
        for op in self.operators:  # a later operator's margin is in its own, coarser pixels
            margin += op.margin * scale
            scale *= op.factor
        self.margin = margin
        self.identity = all(op.identity for op in self.operators)

    def apply(self, x):
        for op in self.operators:
            x = op.apply(x)
        return x

    def check(self, observation_shape):
        for op in self.operators:
            op.check(observation_shape)

    def to(self, device):
        return Compose(*(op.to(device) for op in self.operators))

    def describe(self):
        return {"operator": "Compose", "operators": [op.describe() for op in self.operators]}

    def __repr__(self) -> str:
        return " then ".join(map(repr, self.operators))


class _Filter(Operator):
    """A fixed 2D kernel applied to every channel alike: ``weight`` (1, 1, kh, kw) after
    replicate-padding by ``padding`` (left, right, top, bottom), with ``stride``."""

    weight: torch.Tensor
    padding: tuple
    stride: int = 1

    def apply(self, x):
        k, c = x.shape[:2]
        y = F.pad(x.reshape(k * c, 1, *x.shape[-2:]), self.padding, mode="replicate")
        y = F.conv2d(y, self.weight, stride=self.stride)
        return y.reshape(k, c, *y.shape[-2:])

    def to(self, device):
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.weight = self.weight.to(device)
        return new


class Downsample(_Filter):
    """Super-resolution's degradation: the original code's Lanczos downsampler.

    A separable Lanczos-2 kernel of ``4 * factor`` taps at half-pixel phase
    (the SR notebook's ``Downsampler(kernel_type='lanczos2', phase=0.5,
    preserve_size=True)``), applied with stride ``factor`` after replicating
    the border by ``3 * factor / 2`` pixels, so an (H, W) image becomes
    exactly (H / factor, W / factor).
    """

    def __init__(self, factor: int, kernel: str = "lanczos2"):
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or not 2 <= factor <= 32:
            raise DIPError(f"the super-resolution factor must be a whole number from 2 to 32 "
                           f"(got {factor!r}); the paper uses 4 and 8.")
        if kernel not in ("lanczos2", "lanczos3", "box"):
            raise DIPError(f"kernel must be 'lanczos2', 'lanczos3' or 'box' (got {kernel!r}).")
        self.factor = self.stride = int(factor)
        self.kernel_name = kernel
        taps = lanczos_taps(self.factor, kernel)
        self.weight = torch.from_numpy(np.outer(taps, taps).astype(np.float32))[None, None]
        pad = len(taps) - self.factor
        self.padding = (pad // 2, pad - pad // 2) * 2  # left, right, top, bottom

    def describe(self):
        return {"operator": "Downsample", "factor": self.factor, "kernel": self.kernel_name}


def lanczos_taps(factor: int, kernel: str = "lanczos2") -> np.ndarray:
    """The 1D taps of the original code's half-phase downsampling kernel, summing to 1.

    Tap i (1-based) of ``support * 2 * factor`` sits ``|i + 1/2 - centre| /
    factor`` low-resolution pixels from the centre, ``centre = support *
    factor + 1``, and weighs ``sinc(d) * sinc(d / support)``; its 2D kernel
    is the outer product (the original computes the same product directly).
    """
    if kernel == "box":
        return np.full(factor, 1.0 / factor)
    support = 2 if kernel == "lanczos2" else 3
    width = 2 * support * factor
    centre = (width + 2) / 2.0
    d = np.abs(np.arange(1, width + 1) + 0.5 - centre) / factor
    taps = np.sinc(d) * np.sinc(d / support)
    return taps / taps.sum()


class Blur(_Filter):
    """Deconvolution's degradation: convolution with a point-spread function.

    ``psf``: a 2D array (a measured bead image, or :func:`gaussian_psf`),
    finite and non-negative, normalised here to sum 1.  The output grid gets
    a margin of the PSF's radius, so observed pixels at the image's border
    are explained by output pixels the network is free to choose, not by a
    guessed boundary condition.

    A 3D PSF (Z, Y, X: a bead stack, or ``gaussian_psf(sigma, sigma_z=...)``)
    is for a z-stack: the classical partner deconvolves the whole volume with
    it (3D Richardson-Lucy), while DIP, which runs per slice, blurs each slice
    with its in-focus plane (:attr:`focus`, the plane of the highest peak).
    """

    def __init__(self, psf):
        psf = np.asarray(psf)
        if psf.dtype.kind not in "iuf":
            raise DIPError(f"the PSF must be a numeric 2D or 3D array (got dtype {psf.dtype}).")
        psf = np.squeeze(psf.astype(np.float64))
        if psf.ndim not in (2, 3):
            raise DIPError(f"the PSF must be 2D (Y, X), or 3D (Z, Y, X) for a z-stack (got shape "
                           f"{np.shape(psf)}); squeeze or crop it to its planes of light.")
        if not np.isfinite(psf).all():
            raise DIPError("the PSF has non-finite values (NaN or inf); give a clean PSF.")
        if psf.min() < 0:
            raise DIPError(f"the PSF has negative values (down to {psf.min():.3g}); subtract the "
                           "background and clip at zero first, e.g. np.clip(psf - psf.min(), 0, None).")
        if psf.sum() <= 0:
            raise DIPError("the PSF sums to zero; it cannot be normalised. Give a PSF with some light in it.")
        if max(psf.shape) > 255:
            raise DIPError(f"the PSF is {'x'.join(map(str, psf.shape))} pixels; crop it around its "
                           "peak to the region that holds the light (at most 255 pixels a side).")
        #: the whole 3D PSF, normalised (None: a 2D PSF)
        self.volume = (psf / psf.sum()).astype(np.float32) if psf.ndim == 3 else None
        #: the in-focus plane's index in a 3D PSF (:func:`in_focus_plane`)
        self.focus = None if psf.ndim == 2 else in_focus_plane(psf)
        plane = psf if psf.ndim == 2 else psf[self.focus]
        self.psf = (plane / plane.sum()).astype(np.float32)
        kh, kw = self.psf.shape
        self.margin = max(kh, kw) // 2
        # true convolution (as scipy.ndimage.convolve): correlate with the flipped PSF
        self.weight = torch.from_numpy(self.psf[::-1, ::-1].copy())[None, None]
        self.padding = (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2)

    def check(self, observation_shape):
        h, w = observation_shape[-2:]
        if self.psf.shape[0] > 2 * h or self.psf.shape[1] > 2 * w:
            raise DIPError(f"the PSF ({self.psf.shape[0]}x{self.psf.shape[1]}) is larger than twice "
                           f"the image ({h}x{w}); crop the PSF to where its light is.")

    def check_volume(self, planes: int, stack: str | None) -> None:
        """A 3D PSF needs a z-stack it fits in: refused before any work otherwise."""
        if self.volume is None:
            return
        z = self.volume.shape[0]
        if stack != "z" or planes < 2:
            what = "one image" if planes < 2 else "a time-lapse"
            raise DIPError(f"the PSF is 3D ({'x'.join(map(str, self.volume.shape))}) but the data is {what}: a "
                           "3D PSF is for a z-stack (stack='z', --stack z, or a stack whose axis is labelled z). "
                           f"For a single plane pass the PSF's in-focus plane instead, psf[{self.focus}].")
        if z > 2 * planes:
            raise DIPError(f"the PSF has {z} planes, more than twice the stack's {planes}; crop it in z to "
                           "the planes that hold its light.")

    def describe(self):
        described = {"operator": "Blur", "psf_shape": list(self.psf.shape),
                     "psf_sum_of_squares": round(float(np.square(self.psf).sum()), 9)}
        if self.volume is not None:  # a 2D PSF's description (and fingerprint) stays as it was
            described.update(psf_volume_shape=list(self.volume.shape), psf_focus=self.focus,
                             psf_volume_sum_of_squares=round(float(np.square(self.volume).sum()), 9))
        return described

    def __repr__(self) -> str:
        plane = f"psf {self.psf.shape[0]}x{self.psf.shape[1]}"
        if self.volume is None:
            return f"Blur({plane})"
        return f"Blur({plane}: plane {self.focus} of a {'x'.join(map(str, self.volume.shape))} PSF)"


def volume_blurs(operator) -> list:
    """The blurs of ``operator`` (itself, or a Compose's parts) whose PSF is 3D: what only a
    z-stack run whole can use."""
    return [op for op in getattr(operator, "operators", (operator,)) if getattr(op, "volume", None) is not None]


def in_focus_plane(psf: np.ndarray) -> int:
    """The in-focus plane of a 3D (Z, Y, X) PSF: the plane of its highest peak (of a tie, the one
    nearest the middle, ``Z // 2``), where a bead stack is sharpest."""
    psf = np.asarray(psf)
    peaks = psf.reshape(psf.shape[0], -1).max(axis=1)
    best = np.flatnonzero(peaks >= peaks.max() * (1 - 1e-6))
    return int(best[np.argmin(np.abs(best - psf.shape[0] // 2))])


def gaussian_psf(sigma: float, size: int | None = None, sigma_z: float | None = None,
                 size_z: int | None = None) -> np.ndarray:
    """A normalised 2D Gaussian PSF of standard deviation ``sigma`` pixels (odd ``size``,
    default ``2 * ceil(3 * sigma) + 1``): a widefield microscope's in-focus blur, roughly.
    With ``sigma_z`` (in planes) it is 3D, (Z, Y, X), for a z-stack (odd ``size_z``, default
    from ``sigma_z`` alike); its middle plane is the 2D one."""
    sigma = _psf_sigma(sigma, "sigma")
    size = _psf_size(size, sigma, "size")
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    psf = np.outer(g, g)
    if sigma_z is not None:
        sigma_z = _psf_sigma(sigma_z, "sigma_z")
        planes = _psf_size(size_z, sigma_z, "size_z")
        rz = np.arange(planes) - planes // 2
        psf = np.exp(-0.5 * (rz / sigma_z) ** 2)[:, None, None] * psf
    return (psf / psf.sum()).astype(np.float32)


def _psf_sigma(sigma, name: str) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating, np.integer)) or not 0 < sigma <= 50:
        raise DIPError(f"the PSF's {name} must be a number of pixels in (0, 50] (got {sigma!r}).")
    return float(sigma)


def _psf_size(size, sigma: float, name: str) -> int:
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise DIPError(f"the PSF's {name} must be an odd whole number (got {size!r}).")
    return int(size)


# ----------------------------------------------------------------------------- the engine's side

def _check_operator(op) -> None:
    if not isinstance(op, Operator):
        raise DIPError(f"an operator must be a src_core.operators.Operator (got {type(op).__name__}); "
                       "subclass Operator and define apply(x).")
    f = op.factor
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1:
        raise DIPError(f"{type(op).__name__}.factor must be a whole number >= 1 (got {f!r}).")
    if isinstance(op.margin, bool) or not isinstance(op.margin, (int, np.integer)) or op.margin < 0:
        raise DIPError(f"{type(op).__name__}.margin must be a whole number >= 0 (got {op.margin!r}).")


def split_mask(operator: Operator | None) -> tuple[Operator, np.ndarray | None]:
    """(the operator without its Mask, the mask or None): a Mask may only come last."""
    if operator is None:
        return Identity(), None
    _check_operator(operator)
    ops = operator.operators if isinstance(operator, Compose) else (operator,)
    masks = [i for i, op in enumerate(ops) if isinstance(op, Mask)]
    if not masks:
        return operator, None
    if masks != [len(ops) - 1]:
        raise DIPError("a Mask can only be the last operator (the pixels the camera kept); "
                       "write e.g. Blur(psf).then(Mask(mask)).")
    rest = ops[:-1]
    linear = Identity() if not rest else rest[0] if len(rest) == 1 else Compose(*rest)
    return linear, ops[-1].mask


def check_maps(operator: Operator, channels: int, output_grid: tuple, observation_grid: tuple) -> None:
    """Apply the operator to an output grid of shapes only (torch's meta device; no data, no
    time) and check that it lands on the observation grid: a user's operator whose ``factor``
    or ``output_shape`` disagrees with its ``apply`` is refused before any work."""
    expected = (1, channels, *observation_grid)
    try:
        with torch.no_grad():
            got = tuple(operator.to("meta").apply(torch.zeros((1, channels, *output_grid), device="meta")).shape)
    except Exception as exc:  # an operator that cannot run on shapes alone: try one real call
        try:
            with torch.no_grad():
                got = tuple(operator.apply(torch.zeros((1, channels, *output_grid))).shape)
        except Exception as exc2:
            raise DIPError(f"{operator!r} failed on a (1, {channels}, {output_grid[0]}, {output_grid[1]}) "
                           f"output: {type(exc2).__name__}: {str(exc2)[:200]}") from exc
    if got != expected:
        raise DIPError(f"{operator!r} maps the output grid (1, {channels}, {output_grid[0]}, {output_grid[1]}) "
                       f"to {got}, but the observation grid is {expected}; its factor "
                       f"({operator.factor}) and output_shape must agree with what apply() does.")


@dataclass(frozen=True)
class Grid:
    """Where the observation and the output sit on the padded grids the network works on.

    The output grid is a multiple of ``multiple`` (2 ** scales) that holds
    the output plus the operator's margin; the observation grid is that
    divided by the factor; the padding is centred, in whole observed pixels.
    """

    observation: tuple[int, int]
    observation_crop: tuple[slice, slice]
    output: tuple[int, int]
    output_crop: tuple[slice, slice]


def padded_grid(observed_hw: tuple[int, int], factor: int, margin: int, multiple: int) -> Grid:
    """The grids for an observation of ``observed_hw`` (factor 1, margin 0: the plain
    centred padding to a multiple)."""
    step = multiple // math.gcd(multiple, factor)  # observed pixels per whole output multiple
    edge = -(-margin // factor)                    # the margin, in observed pixels
    sizes, crops, out_crops = [], [], []
    for n in observed_hw:
        size = n + 2 * edge
        size += (-size) % step
        before = (size - n) // 2
        sizes.append(size)
        crops.append(slice(before, before + n))
        out_crops.append(slice(before * factor, (before + n) * factor))
    return Grid(tuple(sizes), tuple(crops), tuple(s * factor for s in sizes), tuple(out_crops))
