"""Between the user's arrays and the engine's (C, H, W) float32 images in [0, 1].

Users hand us 2D grayscale, 2D with channels (RGB or more, channels last by
default), or stacks (Z or T, Y, X[, C]) that are restored slice by slice, in
uint8, uint16 or float.  Results go back in the same shape, dtype and value
range.  Inputs are never modified: every conversion makes a new array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DIPError


@dataclass(frozen=True)
class Scaling:
    """Affine map between the user's value range and [0, 1].

    uint8 uses the fixed range [0, 255] (the image-processing convention that
    Table 1's PSNRs assume).  Other integer types and floats outside [0, 1]
    use the finite data's own min and max, so 12-bit data stored as uint16 is
    not squeezed into a sliver of [0, 1].
    """

    offset: float
    scale: float
    dtype: str

    @classmethod
    def for_image(cls, image: np.ndarray) -> "Scaling":
        dtype = np.dtype(image.dtype)
        if dtype == np.uint8:
            return cls(0.0, 255.0, dtype.str)
        if dtype.kind == "b":
            return cls(0.0, 1.0, dtype.str)
        if dtype.kind not in "iuf":
            raise DIPError(f"unsupported image dtype {dtype}; use uint8, uint16 or float.")
        finite = image[np.isfinite(image)] if dtype.kind == "f" else image
        if finite.size == 0:
            raise DIPError("the image has no finite pixel value; nothing to restore.")
        return cls.for_range(dtype, float(finite.min()), float(finite.max()))

    @classmethod
    def for_range(cls, dtype, lo: float, hi: float) -> "Scaling":
        """The scaling of integer or float data whose finite values run from ``lo`` to ``hi``."""
        dtype = np.dtype(dtype)
        if dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
            return cls(0.0, 1.0, dtype.str)
        if not math.isfinite(hi - lo):
            raise DIPError(f"the image's values run from {lo:.3g} to {hi:.3g}, a range float64 cannot "
                           "hold; divide the data by a constant first.")
        return cls(lo, (hi - lo) if hi > lo else 1.0, dtype.str)

    @property
    def identity(self) -> bool:
        """The data are in [0, 1] already (float data that were, bool)."""
        return (self.offset, self.scale) == (0.0, 1.0)

    def with_headroom(self, factor: float) -> "Scaling":
        """Room above the data's brightest value, for answers that may be brighter than the
        observation (deconvolution sharpens peaks): a scaling from the data's own range grows
        by ``factor`` (within an integer type's range); fixed ones (8-bit, bool, float in
        [0, 1]) keep the room their type gives."""
        dtype = np.dtype(self.dtype)
        fixed = dtype == np.uint8 or dtype.kind == "b" or self.identity
        if factor <= 1 or fixed:
            return self
        scale = self.scale * factor
        if dtype.kind in "iu":
            scale = max(self.scale, min(scale, float(np.iinfo(dtype).max) - self.offset))
        return Scaling(self.offset, scale, self.dtype)

    def to_unit(self, data: np.ndarray) -> np.ndarray:
        return ((np.asarray(data, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.dtype)
        values = np.asarray(unit, dtype=np.float64) * self.scale + self.offset
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            # float64 rounds the maximum of (u)int64 up to 2**63 (2**64), which would wrap to
            # the minimum: clip to the largest float64 that still fits the type
            top = float(info.max) if float(info.max) <= info.max else np.nextafter(float(info.max), 0)
            return np.clip(np.rint(values), float(info.min), top).astype(dtype)
        if dtype.kind == "b":
            return values >= 0.5
        return values.astype(dtype)


@dataclass(frozen=True)
class Layout:
    """Where the channels and the slices are in the user's array.

    ``channel_axis=None`` means no channel axis.  The two axes before the
    channel axis (or the last two) are Y and X; any axes before those are
    stack axes, each slice restored on its own.
    """

    shape: tuple
    channel_axis: int | None

    @classmethod
    def infer(cls, shape, channel_axis="auto") -> "Layout":
        shape = tuple(int(s) for s in shape)
        ndim = len(shape)
        if ndim < 2:
            raise DIPError(f"an image needs at least 2 dimensions (Y, X); got shape {shape}.")
        if any(s == 0 for s in shape):
            raise DIPError(f"the image is empty (shape {shape}); give an array with pixels.")
        if channel_axis == "auto":
            if ndim == 2:
                channel_axis = None
            elif shape[-1] in (3, 4) and ndim in (3, 4):
                channel_axis = ndim - 1
            elif ndim == 3 and shape[-1] in (1, 2) and min(shape[:2]) > 4:
                channel_axis = 2  # (Y, X, 1) or grey + alpha, not a stack of one-pixel-wide images
            elif ndim == 3:
                channel_axis = None
            else:
                raise DIPError(
                    f"cannot tell the channel axis of an image of shape {shape}; "
                    "pass channel_axis (an axis number, or None for no channels)."
                )
        elif channel_axis is not None:
            if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
                raise DIPError(f"channel_axis must be an axis number, None or 'auto' (got {channel_axis!r}).")
            channel_axis = int(channel_axis)
            if not -ndim <= channel_axis < ndim:
                raise DIPError(f"channel_axis {channel_axis} is outside an image of shape {shape}.")
            channel_axis %= ndim
            if ndim < 3:
                raise DIPError(f"channel_axis given but shape {shape} has only Y and X.")
        return cls(shape, channel_axis)

    @property
    def channels(self) -> int:
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def spatial_shape(self) -> tuple:
        rest = [s for i, s in enumerate(self.shape) if i != self.channel_axis]
        return tuple(rest[-2:])

    @property
    def stack_shape(self) -> tuple:
        rest = [s for i, s in enumerate(self.shape) if i != self.channel_axis]
        return tuple(rest[:-2])

    @property
    def slices(self) -> int:
        return int(np.prod(self.stack_shape)) if self.stack_shape else 1

    def resized(self, spatial: tuple) -> "Layout":
        """The same layout with other Y and X sizes (a super-resolved answer's)."""
        rest = [i for i in range(len(self.shape)) if i != self.channel_axis]
        shape = list(self.shape)
        shape[rest[-2]], shape[rest[-1]] = (int(n) for n in spatial)
        return Layout(tuple(shape), self.channel_axis)

    def to_nchw(self, array: np.ndarray) -> np.ndarray:
        """(slices, channels, H, W) view-or-copy of an array in this layout (a dask array stays
        a lazy dask array)."""
        a = array if is_lazy(array) else np.asarray(array)
        if self.channel_axis is None:
            a = a[..., None]
        else:
            a = np.moveaxis(a, self.channel_axis, -1)
        h, w, c = a.shape[-3:]
        return np.moveaxis(a.reshape(-1, h, w, c), -1, 1)

    def from_nchw(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_nchw`."""
        a = np.moveaxis(np.asarray(array), 1, -1)
        h, w, c = a.shape[-3:]
        a = a.reshape(*self.stack_shape, h, w, c)
        if self.channel_axis is None:
            return a[..., 0]
        return np.moveaxis(a, -1, self.channel_axis)

    def mask_to_nchw(self, mask: np.ndarray, name: str = "mask") -> np.ndarray:
        """Broadcast a mask to (slices, channels, H, W).

        Accepted: (Y, X) for every slice and channel; the image's shape
        without its channel axis (one mask per slice); or the image's full
        shape (one mask per channel).
        """
        mask = np.asarray(mask)
        no_channel = tuple(s for i, s in enumerate(self.shape) if i != self.channel_axis)
        if mask.shape == self.shape:
            out = self.to_nchw(mask)
        elif mask.shape == no_channel:
            out = Layout(no_channel, None).to_nchw(mask)
        elif mask.shape == self.spatial_shape:
            out = mask[None, None]
        else:
            shapes = [f"{self.spatial_shape} (applied to every slice and channel)"]
            if no_channel != self.spatial_shape:
                shapes.append(f"{no_channel} (one per slice)")
            if self.shape != no_channel:
                shapes.append(f"{self.shape} (one per channel)")
            raise DIPError(f"{name} shape {mask.shape} does not match image shape {self.shape}; "
                           f"give a {name} of shape {' or '.join(shapes)}.")
        return np.broadcast_to(out, (self.slices, self.channels, *self.spatial_shape))


def reference_scaling(image_scaling: Scaling, image_dtype, reference: np.ndarray) -> Scaling:
    """How a reference maps to [0, 1]: as intensities in the image's own units, so a float
    image and the 8-bit original it came from compare as they are; except where one of the
    two is a float in [0, 1] and the other integer, read as scikit-image's ``img_as_float``
    convention (1.0 is the integer type's maximum)."""
    image_dtype, dtype = np.dtype(image_dtype), np.dtype(reference.dtype)
    if dtype == image_dtype:
        return image_scaling

    def full(dt) -> float:
        return 1.0 if dt.kind == "b" else float(np.iinfo(dt).max)

    finite = reference[np.isfinite(reference)] if dtype.kind == "f" else None
    unit_float = finite is not None and (finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1))
    if image_dtype.kind in "iub" and unit_float:
        top = full(image_dtype)
        return Scaling(image_scaling.offset / top, image_scaling.scale / top, dtype.str)
    if dtype.kind in "iub" and image_dtype.kind == "f" and image_scaling.identity:
        return Scaling(0.0, full(dtype), dtype.str)
    return Scaling(image_scaling.offset, image_scaling.scale, dtype.str)


def check_reference(reference_shape: tuple, answer_shape: tuple, image_shape: tuple | None = None) -> None:
    """A reference is the clean version of the answer: the same shape, or an error (which
    names the input's shape too when the answer is larger, as in super-resolution)."""
    if tuple(reference_shape) != tuple(answer_shape):
        if image_shape is not None and tuple(image_shape) != tuple(answer_shape):
            raise DIPError(f"reference shape {tuple(reference_shape)} does not match the answer's "
                           f"shape {tuple(answer_shape)} (the input is {tuple(image_shape)}); give "
                           "the clean image at the answer's size.")
        raise DIPError(f"reference shape {tuple(reference_shape)} does not match image shape "
                       f"{tuple(answer_shape)}; give the clean version of the same image.")


def is_lazy(array) -> bool:
    """An array that is not in memory (dask; zarr goes through dask.array.from_array)."""
    return type(array).__module__.split(".")[0] in ("dask", "zarr")


class LazySlices:
    """(N, C, H, W) float32 in [0, 1] read one slice at a time from a stack that is not in
    memory (a dask or zarr array): each slice is read when its run starts, so the stack is
    never loaded whole to restore it (what a result holds, the answer and the corrupted
    input, is in memory).

    ``masks`` zeroes the missing pixels of each slice read, as the in-memory path does.
    Indexing by a number gives one (C, H, W) slice; by a slice, an in-memory stack.
    """

    dtype = np.dtype(np.float32)
    ndim = 4
    read_by_slice = True  # for whoever would take it whole (a fingerprint)

    def __init__(self, nchw, scaling: Scaling, masks: np.ndarray | None = None, clip: bool = False):
        self.source = nchw          # dask (N, C, H, W) in the user's dtype
        self.scaling = scaling
        self.masks = masks
        self.clip = clip
        self.shape = tuple(int(n) for n in nchw.shape)

    @classmethod
    def of(cls, array, layout: "Layout", scaling: Scaling | None = None, **kwargs) -> "LazySlices":
        """The slices of ``array`` (dask or zarr) in ``layout``; ``scaling`` from its values when
        not given (one streaming pass that also refuses NaN and inf)."""
        import dask
        import dask.array as da

        source = array if type(array).__module__.startswith("dask") else da.from_array(array)
        if scaling is None:
            dtype = np.dtype(source.dtype)
            if dtype.kind == "f":
                finite = da.isfinite(source)
                bad, lo, hi = dask.compute((~finite).sum(), da.nanmin(da.where(finite, source, np.nan)),
                                           da.nanmax(da.where(finite, source, np.nan)), scheduler="threads")
                if bad:
                    raise DIPError(f"the stack has {int(bad)} NaN or inf values; a stack read slice by slice "
                                   "must be finite: replace them (np.nan_to_num) or load it into memory "
                                   "(np.asarray), where they are treated as missing pixels.")
                scaling = Scaling.for_range(dtype, float(lo), float(hi))
            elif dtype.kind in "iu" and dtype != np.uint8:
                lo, hi = dask.compute(source.min(), source.max(), scheduler="threads")
                scaling = Scaling.for_range(dtype, float(lo), float(hi))
            else:
                scaling = Scaling.for_image(np.zeros(1, dtype))
        return cls(layout.to_nchw(source), scaling, **kwargs)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, index: int) -> np.ndarray:
        # read here, whatever dask's default scheduler is (a Dask client may be active or not)
        x = self.scaling.to_unit(self.source[index].compute(scheduler="synchronous"))
        if self.masks is not None:
            x = x * self.masks[index]
        return np.clip(x, 0.0, 1.0) if self.clip else x

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._read(int(key))
        if isinstance(key, slice):
            return np.stack([self._read(i) for i in range(*key.indices(len(self)))])
        raise TypeError(f"LazySlices take a slice number or a range, not {key!r}")

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)
