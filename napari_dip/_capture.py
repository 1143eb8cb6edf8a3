"""Reading the user's layers: check them against each other and copy what a run needs.

Nothing here needs a Qt widget or writes to a layer.  :func:`check_layers` is
the cheap part (shapes, kinds, dtypes; no copy), shared by the widget's live
check before Run and by :func:`capture`, which then copies the arrays so that
editing layers during a run cannot disturb it (except a whole dask or zarr
stack: the engine reads it one slice at a time, never whole).

Mask convention: in a napari Labels layer the painted pixels are the ones to
fill; the engine's masks are True = observed (``src_core.mask_from_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import src_core
from src_core import DIPError, RunConfig

MASK_FOR_KEY = "napari_dip_mask_for"              # a Labels layer made for image <name>
REFERENCE_FOR_KEY = "napari_dip_reference_for"    # the clean version of image <name>
TASK_FOR_KEY = "napari_dip_task"                  # the task a sample image was made for
REGIONS = ("whole", "damage", "tiles")            # the whole image, around the mask, or in tiles


@dataclass
class Source:
    """What output layers copy from the input layer (taken when the run starts)."""

    name: str
    ndim: int                       # napari dims of the layer (channels of RGB excluded)
    rgb: bool
    dtype: np.dtype
    scale: tuple
    translate: tuple
    axis_labels: tuple
    units: tuple | None
    contrast_limits: tuple | None
    colormap: object | None

    def look_kwargs(self) -> dict:
        """Same contrast and colours as the source, so outputs compare at a glance."""
        kwargs = {}
        if self.contrast_limits is not None:
            kwargs["contrast_limits"] = self.contrast_limits
        if self.colormap is not None and not self.rgb:
            kwargs["colormap"] = self.colormap
        return kwargs


@dataclass
class Captured:
    """Copies of everything one run reads: arrays, settings and the source's geometry.

    With a ``region`` (rows, columns of the plane) the arrays are cut to it;
    ``full_image`` is always the whole captured image (the answer is pasted into it).
    """

    source: Source
    image: np.ndarray
    mask: np.ndarray | None           # engine convention: True = observed
    reference: np.ndarray | None
    task: str
    config: RunConfig
    missing_fraction: float = 0.5
    mask_seed: int = 0
    slice_index: tuple | None = None  # stack position when only the current slice runs
    mask_name: str | None = None
    reference_name: str | None = None
    threads: int | None = None         # CPU threads; None: the free cores less one for the GUI
    keep_observed: bool | None = None  # None: the engine's default (on, except for denoising)
    region: tuple | None = None        # (rows, columns) slices of the plane, or None: all of it
    full_image: np.ndarray | None = None  # the whole captured image (``image`` when no region)
    label: int | None = None
    mask_sliced: bool = False          # the mask layer has stack axes (cut to the slice)
    mask_channels: bool = False        # the mask layer has the RGB image's channel axis
    task_options: dict = field(default_factory=dict)  # e.g. {"factor": 4}, {"psf": 2.0 or an array}
    #: options a layer stood for: name -> (the layer's name, the plane of a 3D stack or None)
    option_layers: dict = field(default_factory=dict)
    tile: int | str | None = None      # region "tiles": the tile side, or "auto"
    scheduler: str | None = None       # a Dask scheduler's address: the slices or tiles run there
    client: object = None              # or a distributed.Client of the caller's

    @property
    def channel_axis(self):
        return -1 if self.source.rgb else None

    @property
    def volume(self) -> dict:
        """``stack`` and ``spacing`` for the engine: a whole stack whose one stack axis napari
        labels z is a z-stack (its classical partner is 3D), its spacing the layer's scale;
        anything else (a time-lapse, one slice, a region) runs slice by slice."""
        stack_axes = self.source.ndim - 2
        if self.slice_index is not None or stack_axes != 1 or self.region is not None:
            return {}
        if str(self.source.axis_labels[-3]).lower() != "z":
            return {}
        return {"stack": "z", "spacing": tuple(float(abs(v)) for v in self.source.scale[-3:])}

    def paste(self, answer: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
        """The answer for the run's region placed into (a copy of) the captured image, or of
        ``background`` (laid out like it: the restarts' spread goes into zeros)."""
        if self.region is None:
            return answer
        whole = (self.full_image if background is None else background).copy()
        whole[self.plane_index()] = answer
        return whole

    def plane_index(self) -> tuple:
        """The index of the region in an array laid out like the captured image."""
        tail = (slice(None),) if self.source.rgb else ()
        return (Ellipsis, *self.region, *tail)

    def stack_offset(self) -> tuple:
        """Where the captured data starts in the source's stack axes (zeros: all slices)."""
        return self.slice_index or (0,) * (self.source.ndim - 2)

    def plane_offset(self) -> tuple:
        return (0, 0) if self.region is None else (self.region[0].start, self.region[1].start)

    def placed(self, stack: bool, cropped: bool = True, factor: int = 1) -> dict:
        """scale/translate/axis labels/units of a layer of captured data: with the source's
        stack axes (``stack``) or the plane only, moved to the captured slice and, when
        ``cropped``, to the region.  ``factor``: the layer's Y and X pixels are that many
        times smaller (a super-resolved answer), with its pixel edges on the source's."""
        s = self.source
        n = s.ndim if stack else 2
        plane = self.plane_offset() if cropped else (0, 0)
        offset = (*self.stack_offset(), *plane)[-n:]
        translate = [t + o * sc for t, o, sc in zip(s.translate[-n:], offset, s.scale[-n:])]
        scale = list(s.scale[-n:])
        for axis in (-2, -1):  # napari puts pixel centres at translate + index * scale
            translate[axis] += (1.0 / factor - 1.0) * scale[axis] / 2
            scale[axis] /= factor
        kwargs = dict(scale=tuple(scale), axis_labels=s.axis_labels[-n:], translate=tuple(translate))
        if s.units is not None:
            kwargs["units"] = s.units[-n:]
        return kwargs


def _layer_source(layer) -> Source:
    units = getattr(layer, "units", None)
    return Source(
        name=str(layer.name), ndim=int(layer.ndim), rgb=bool(getattr(layer, "rgb", False)),
        dtype=np.dtype(layer.dtype) if hasattr(layer, "dtype") else np.asarray(layer.data).dtype,
        scale=tuple(float(s) for s in layer.scale),
        translate=tuple(float(t) for t in layer.translate),
        axis_labels=tuple(str(a) for a in layer.axis_labels),
        units=None if units is None else tuple(units),
        contrast_limits=tuple(layer.contrast_limits) if hasattr(layer, "contrast_limits") else None,
        colormap=getattr(layer, "colormap", None),
    )


def _plain_data(layer, what: str):
    if getattr(layer, "multiscale", False):
        raise DIPError(f"{what} '{layer.name}' is a multiscale (pyramid) layer; open the full-"
                       "resolution level as a plain image layer to restore it.")
    return layer.data


def image_plane(layer) -> tuple:
    shape = np.shape(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)
    return tuple(shape[-3:-1] if getattr(layer, "rgb", False) else shape[-2:])


def current_index(viewer, layer) -> tuple:
    """The data index of the layer's stack axes at the viewer's current position."""
    n_stack = layer.ndim - 2
    if n_stack <= 0:
        return ()
    point = layer.world_to_data(viewer.dims.point)
    shape = np.shape(layer.data)
    return tuple(int(np.clip(round(float(point[i])), 0, shape[i] - 1)) for i in range(n_stack))


def check_layers(image_layer, mask_layer=None, reference_layer=None, *, task: str = "inpaint",
                 factor: int = 1):
    """Every check on the layers that needs no copy of their data; raises DIPError.

    Returns ``mask_layer``, or None where the task ignores the mask.
    """
    if image_layer is None:
        raise DIPError("no image layer: open an image (or File > Open Sample > Deep Image Prior) "
                       "and choose it as the image to restore.")
    if task not in src_core.tasks.TASKS_BY_NAME:
        raise DIPError(f"task must be one of {tuple(src_core.tasks.TASKS_BY_NAME)} (got {task!r}).")
    for layer, what in ((image_layer, "image"), (reference_layer, "reference")):
        kind = type(layer).__name__
        if layer is not None and kind != "Image":
            raise DIPError(f"the {what} '{getattr(layer, 'name', layer)}' is a {kind} layer; choose an "
                           f"Image layer as the {what}.")
    rgb = bool(getattr(image_layer, "rgb", False))
    shape = tuple(np.shape(_plain_data(image_layer, "image")))
    plane = shape[-3:-1] if rgb else shape[-2:]
    no_channel = shape[:-1] if rgb else shape
    mask_kind = src_core.get_task(task).mask
    if mask_kind == "random":
        mask_layer = None  # the engine draws its own Bernoulli mask
    if mask_kind == "required" and mask_layer is None:
        raise DIPError("inpainting needs a mask: choose a Labels layer with the damaged region "
                       "painted (painted = to fill), or make a random mask.")
    if mask_layer is not None:
        labels = _plain_data(mask_layer, "mask")
        mshape = tuple(np.shape(labels))
        if not (mshape in (no_channel, plane) or (rgb and mshape == shape)):
            per_slice = f", one per slice {no_channel}" if len(no_channel) > 2 else ""
            reverse = ""
            if len(mshape) > len(no_channel) and not rgb:
                reverse = (" The mask has more dimensions than the image; a mask with channels "
                           "only fits an RGB image.")
            raise DIPError(
                f"mask '{mask_layer.name}' has shape {mshape} but image '{image_layer.name}' has "
                f"shape {shape}: the mask must be {plane} (applied to every slice and channel"
                f"{per_slice}).{reverse}")
        mdtype = np.dtype(getattr(labels, "dtype", np.asarray(labels).dtype))
        if mdtype.kind not in "biu":
            raise DIPError(f"mask '{mask_layer.name}' must hold integer labels (got {mdtype}); "
                           "use a Labels layer (painted = to fill).")
    if reference_layer is not None:
        ref_shape = tuple(np.shape(_plain_data(reference_layer, "reference")))
        answer = list(shape)
        for axis in ((-3, -2) if rgb else (-2, -1)):
            answer[axis] *= factor
        try:
            src_core.imaging.check_reference(ref_shape, tuple(answer), shape)
        except DIPError as exc:
            raise DIPError(f"reference '{reference_layer.name}', image '{image_layer.name}': {exc}") from None
    return mask_layer


def read_mask(mask_layer, image_layer, slice_index: tuple | None = None,
              label: int | None = None) -> tuple[np.ndarray, bool, bool]:
    """The engine's mask (True = observed, a new array) of a Labels layer checked by
    :func:`check_layers`, cut to ``slice_index``; with whether it was cut (it has stack axes)
    and whether it has the RGB image's channel axis."""
    labels = _plain_data(mask_layer, "mask")
    rgb = bool(getattr(image_layer, "rgb", False))
    shape = tuple(np.shape(_plain_data(image_layer, "image")))
    plane = shape[-3:-1] if rgb else shape[-2:]
    per_channel = rgb and tuple(np.shape(labels)) == shape
    sliced = slice_index is not None and tuple(np.shape(labels)) != plane
    if sliced:
        labels = labels[tuple(slice_index)]
    return src_core.mask_from_labels(np.asarray(labels), label or None), sliced, per_channel


def check_painted(observed: np.ndarray, mask_name: str, label: int | None = None,
                  slice_index: tuple | None = None, required: bool = True) -> None:
    """A mask must leave something to learn from and, where the task fills it, something to
    fill (raises DIPError); the panel checks this before Run, the capture again at Run."""
    painted = int(observed.size - np.count_nonzero(observed))
    if required and painted == 0:
        which = f" with label {label}" if label else ""
        raise DIPError(
            f"mask '{mask_name}' has no painted pixels{which}"
            f"{' in this slice' if slice_index is not None else ''}: paint the damaged "
            "region (painted = to fill), or make a random mask.")
    if painted == observed.size:
        raise DIPError(f"mask '{mask_name}' covers every pixel: nothing is left to learn "
                       "from. Paint only the damaged region.")


def damage_region(observed: np.ndarray, config: RunConfig, per_channel: bool = False) -> tuple | None:
    """The part of the plane worth restoring around the holes (None: the whole image)."""
    net = config.network
    plane = observed.all(axis=-1) if per_channel else observed
    return src_core.masks.damaged_box(plane, margin=net.context(), min_side=net.min_size())


def capture(image_layer, mask_layer=None, reference_layer=None, *, task: str = "inpaint",
            label: int | None = None, config: RunConfig, slice_index: tuple | None = None,
            missing_fraction: float = 0.5, mask_seed: int = 0, threads: int | None = None,
            keep_observed: bool | None = None, region: str = "whole",
            task_options: dict | None = None, tile="auto", scheduler: str | None = None,
            client=None, option_layers: dict | None = None, around: np.ndarray | None = None) -> Captured:
    """Check the chosen layers and copy what the run needs.

    ``slice_index``: restore only this stack position (``None``: every slice).
    ``region``: "damage" restores only a box around the painted pixels (with
    the context the network needs) and pastes it back (inpainting); "tiles"
    restores a large 2D image in overlapping tiles of ``tile`` pixels ("auto":
    the largest the device takes; inpainting runs only the damaged ones).
    ``scheduler`` (an address) or ``client``: the slices or tiles run on that
    Dask cluster.  ``around`` (H, W) bool, with region "damage": the box is around these
    pixels instead of every painted one, and the mask may have none painted (live healing:
    the pixels a change touched, erased ones too).
    Raises :class:`src_core.DIPError` with a message naming the layers; the
    layers themselves are only read.
    """
    task_options = dict(task_options or {})
    spec = src_core.get_task(task)
    painted_mask = spec.mask == "required"
    mask_layer = check_layers(image_layer, mask_layer, reference_layer, task=task,
                              factor=spec.operator(**task_options).factor)
    if region not in REGIONS:
        raise DIPError(f"region must be one of {REGIONS} (got {region!r}).")
    source = _layer_source(image_layer)
    data = _plain_data(image_layer, "image")
    shape = tuple(np.shape(data))
    stack_shape = (shape[:-1] if source.rgb else shape)[:-2]
    if slice_index is not None and not stack_shape:
        slice_index = None  # a 2D image has one slice: "current" and "all" are the same
    if slice_index is not None and len(slice_index) != len(stack_shape):
        raise DIPError(f"slice index {slice_index} does not fit the stack axes {stack_shape} "
                       f"of '{source.name}'.")

    def take(array):
        """The captured part of an array laid out like the image: copied, except a whole dask or
        zarr stack, which the engine reads one slice at a time."""
        if slice_index is None:
            return array if src_core.imaging.is_lazy(array) else np.array(array)
        return np.array(array[tuple(slice_index)])

    mask = mask_name = None
    mask_sliced = mask_rgb = False
    if mask_layer is not None:
        mask_name = str(mask_layer.name)
        observed, mask_sliced, mask_rgb = read_mask(mask_layer, image_layer, slice_index, label)
        check_painted(observed, mask_name, label, slice_index, painted_mask and around is None)
        mask = observed

    reference = take(reference_layer.data) if reference_layer is not None else None
    image = take(data)
    box = None
    if region == "damage" and painted_mask:
        box = damage_region(mask, config, mask_rgb) if around is None else damage_region(~np.asarray(around), config)
    captured = Captured(source=source, image=image, full_image=image, mask=mask, reference=reference, task=task,
                        threads=threads, keep_observed=keep_observed, config=config,
                        missing_fraction=float(missing_fraction), mask_seed=int(mask_seed),
                        slice_index=None if slice_index is None else tuple(slice_index),
                        mask_name=mask_name, label=label, mask_sliced=mask_sliced,
                        mask_channels=mask_rgb, task_options=task_options,
                        option_layers=dict(option_layers or {}),
                        reference_name=None if reference_layer is None else str(reference_layer.name),
                        tile=tile if region == "tiles" else None, scheduler=(scheduler or "").strip() or None,
                        client=client)
    if box is not None:
        captured.region = box
        index = captured.plane_index()
        captured.image = np.ascontiguousarray(image[index])
        if reference is not None:
            captured.reference = np.ascontiguousarray(reference[index])
        captured.mask = np.ascontiguousarray(mask[index] if mask_rgb else mask[..., box[0], box[1]])
    _option_planes(captured)
    return captured


def _option_planes(captured: Captured) -> None:
    """A 3D option image (a bead stack's PSF) is used whole for a z-stack run whole; for
    anything else (one slice, a region, a time-lapse) its in-focus plane stands for it."""
    if captured.volume:
        return
    for name, value in captured.task_options.items():
        if isinstance(value, np.ndarray) and value.ndim == 3:
            plane = src_core.operators.in_focus_plane(value)
            captured.task_options[name] = value[plane]
            if name in captured.option_layers:
                captured.option_layers[name] = (captured.option_layers[name][0], plane)


def random_mask_labels(layer, missing_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Labels (1 = to fill) with a random ``missing_fraction`` of each plane painted."""
    shape = np.shape(layer.data)
    no_channel = shape[:-1] if getattr(layer, "rgb", False) else shape
    observed = src_core.bernoulli_mask(no_channel, missing_fraction, seed)
    return (~observed).astype(np.uint8)
