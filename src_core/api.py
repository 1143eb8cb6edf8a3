"""The public API: restore an image in the user's own form, or step through a run.

Tasks (mask convention: True / 1 = observed, False / 0 = missing):

* ``"inpaint"``: fill the missing pixels of ``mask``;
* ``"random"``: drop a random ``missing_fraction`` of the pixels of a clean
  image (Bernoulli mask, ``mask_seed``) and restore them; the input itself is
  the reference for PSNR (the paper's Table 1 protocol);
* ``"denoise"``: every pixel observed; the answer is the exponential moving
  average of outputs (0.99 unless the configuration sets another).

Non-finite pixels (NaN, inf) in the image are treated as missing, with a
warning, and recorded in the history's notes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .config import TASKS, RunConfig, preset
from .devices import resolve_device
from .engine import DIPRun, Finished, History
from .errors import DIPError
from .imaging import Layout, Scaling
from .masks import bernoulli_mask

DEFAULT_PRESET = {"inpaint": "text", "random": "table1", "denoise": "denoise"}


def make_config(task: str = "inpaint", preset_name: str | None = None,
                config: RunConfig | None = None, **overrides) -> RunConfig:
    """A validated RunConfig from a preset (or a given config) plus overrides."""
    if task not in TASKS:
        raise DIPError(f"task must be one of {TASKS} (got {task!r}).")
    if config is not None and preset_name is not None:
        raise DIPError("give either a preset or a config, not both.")
    if config is not None:
        return config.replace(**overrides).validate()
    return preset(preset_name or DEFAULT_PRESET[task], **overrides)


@dataclass
class Problem:
    """A restoration problem in engine form, one (C, H, W) slice at a time.

    Built by :func:`prepare`; hands out one :class:`DIPRun` per slice and
    converts the engine's answers back to the user's layout, dtype and range.
    """

    task: str
    config: RunConfig
    layout: Layout
    scaling: Scaling
    images: np.ndarray               # (N, C, H, W) float32 in [0, 1], missing pixels zeroed
    masks: np.ndarray                # (N, C, H, W) bool, True = observed
    references: np.ndarray | None    # (N, C, H, W) float32 or None
    notes: list = field(default_factory=list)

    @property
    def slices(self) -> int:
        return self.images.shape[0]

    def run(self, index: int = 0) -> DIPRun:
        ref = None if self.references is None else self.references[index]
        mask = self.masks[index]
        if not mask.any():
            raise DIPError(f"slice {index} has no observed pixel; nothing to fit there.")
        return DIPRun(self.images[index], mask, self.config, ref)

    def corrupted(self) -> np.ndarray:
        """The observed image (missing pixels at the low end), in the user's form."""
        return self.to_user(self.images * self.masks)

    def to_user(self, nchw: np.ndarray) -> np.ndarray:
        return self.scaling.from_unit(self.layout.from_nchw(nchw))

    def slice_to_user_float(self, chw: np.ndarray) -> np.ndarray:
        """One engine slice as (H, W) or (H, W, C) float in [0, 1], for previews."""
        chw = np.asarray(chw)
        if self.layout.channel_axis is None:
            return chw[0]
        return np.moveaxis(chw, 0, -1)


def prepare(image, mask=None, *, task: str = "inpaint", reference=None,
            missing_fraction: float = 0.5, mask_seed: int = 0, channel_axis="auto",
            preset: str | None = None, config: RunConfig | None = None,
            **overrides) -> Problem:
    """Check everything and convert to engine form; no network is built yet."""
    cfg = make_config(task, preset, config, **overrides)
    resolve_device(cfg.device)
    image = np.asarray(image)
    layout = Layout.infer(image.shape, channel_axis)
    scaling = Scaling.for_image(image)
    images = layout.to_nchw(scaling.to_unit(image)).copy()
    notes = []

    if task == "inpaint":
        if mask is None:
            raise DIPError("inpainting needs a mask (True/1 = observed, False/0 = missing); "
                           "for a random mask use task='random'.")
        masks = layout.mask_to_nchw(_as_bool_mask(mask)).copy()
    elif task == "random":
        if mask is not None:
            raise DIPError("task='random' makes its own Bernoulli mask; "
                           "pass your mask with task='inpaint' instead.")
        no_channel = tuple(s for i, s in enumerate(layout.shape) if i != layout.channel_axis)
        masks = layout.mask_to_nchw(bernoulli_mask(no_channel, missing_fraction, mask_seed)).copy()
        if reference is None:
            reference = image
        notes.append(f"random mask: {missing_fraction:.0%} of pixels missing, mask_seed={mask_seed}")
    else:
        if mask is not None:
            masks = layout.mask_to_nchw(_as_bool_mask(mask)).copy()
        else:
            masks = np.ones(images.shape, dtype=bool)
        if cfg.ema == 0:
            cfg = cfg.replace(ema=0.99)
            notes.append("denoise: the answer is the EMA of outputs (ema=0.99)")

    finite = np.isfinite(images)
    if not finite.all():
        bad = int((~finite).sum())
        message = f"{bad} non-finite pixel values (NaN/inf) were treated as missing"
        warnings.warn(message, stacklevel=2)
        notes.append(message)
        masks &= finite
        images = np.where(finite, images, 0.0).astype(np.float32)
    if not masks.any():
        raise DIPError("the mask has no observed pixel (True = observed, False = missing); "
                       "nothing to fit. Check that the mask is not inverted.")
    images *= masks  # missing pixels carry no information; zero them for display and loss

    references = None
    if reference is not None:
        reference = np.asarray(reference)
        if reference.shape != image.shape:
            raise DIPError(f"reference shape {reference.shape} does not match image shape "
                           f"{image.shape}; give the clean version of the same image.")
        references = layout.to_nchw(scaling.to_unit(reference)).copy()
        if not np.isfinite(references).all():
            raise DIPError("the reference has non-finite values; a reference must be clean.")
        references = np.clip(references, 0.0, 1.0)

    need = cfg.network.min_size()
    h, w = layout.spatial_shape
    if min(h, w) < need:
        raise DIPError(
            f"image of {h}x{w} pixels is too small for a {cfg.network.scales}-scale network "
            f"(it needs at least {need} pixels per side); use fewer scales."
        )
    return Problem(task, cfg, layout, scaling, images, masks, references, notes)


def _as_bool_mask(mask) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype.kind == "b":
        return m
    if m.dtype.kind not in "iuf":
        raise DIPError(f"mask has unsupported dtype {m.dtype}; use bool or 0/1 numbers.")
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise DIPError("mask has non-finite values; use bool or 0/1 numbers.")
    values = np.unique(m)
    if not set(values.tolist()) <= {0, 1}:
        raise DIPError(
            f"mask values must be 0/1 or bool (1 = observed); got values like {values[:5].tolist()}. "
            "For a napari Labels layer use src_core.mask_from_labels(labels)."
        )
    return m.astype(bool)


def iterate(image, mask=None, **kwargs) -> DIPRun:
    """Step-by-step control of one 2D image: a DIPRun whose events you iterate.

    Takes the same arguments as :func:`restore`.  Events carry (C, H, W) float
    outputs in [0, 1]; ``finished.output`` converts back with
    ``problem.to_user``.  For stacks use :func:`prepare` and ``problem.run(i)``.

    >>> import numpy as np, src_core
    >>> img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> run = src_core.iterate(img, task="random", preset="cpu", scales=2, iterations=6,
    ...                        report_every=3)
    >>> [(e.kind, getattr(e, "iteration", None)) for e in run][:2]
    [('progress', 3), ('progress', 6)]
    """
    problem = prepare(image, mask, **kwargs)
    if problem.slices != 1:
        raise DIPError(f"iterate() takes one 2D image; this one is a stack of {problem.slices} "
                       "slices. Use restore(), or prepare() and problem.run(i) per slice.")
    run = problem.run(0)
    run.problem = problem
    return run


@dataclass
class RestoreResult:
    """The answer in the user's form, with everything needed to trust and repeat it."""

    image: np.ndarray
    corrupted: np.ndarray
    mask: np.ndarray                   # (slices, C, H, W) bool, True = observed
    histories: list
    config: RunConfig
    task: str
    notes: list

    @property
    def history(self) -> History:
        """The history of the first (for a 2D image, the only) slice."""
        return self.histories[0]

    def to_dict(self) -> dict:
        return {"task": self.task, "config": self.config.to_dict(), "notes": self.notes,
                "slices": [h.to_dict() for h in self.histories]}


def restore(image, mask=None, *, task: str = "inpaint", reference=None, missing_fraction: float = 0.5,
            mask_seed: int = 0, channel_axis="auto", preset: str | None = None,
            config: RunConfig | None = None, callback=None, **overrides) -> RestoreResult:
    """Restore an image with Deep Image Prior; returns the result and its history.

    ``image``: (Y, X), (Y, X, C) or a stack (Z/T, Y, X[, C]); uint8, uint16 or
    float.  The result has the input's shape, dtype and value range.  ``mask``:
    True/1 = observed.  ``preset``: one of ``src_core.preset_names()``
    (default: the paper's setting for the task); any RunConfig or
    NetworkConfig field can be overridden by keyword.  ``callback(event,
    slice_index)`` sees every event.

    >>> import numpy as np, src_core
    >>> img = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    >>> result = src_core.restore(img, task="random", preset="cpu", scales=2, iterations=10)
    >>> result.image.dtype, result.image.shape, len(result.history.loss)
    (dtype('uint8'), (32, 32), 10)
    """
    problem = prepare(image, mask, task=task, reference=reference, missing_fraction=missing_fraction,
                      mask_seed=mask_seed, channel_axis=channel_axis, preset=preset, config=config,
                      **overrides)
    outputs = np.empty_like(problem.images)
    histories = []
    for index in range(problem.slices):
        run = problem.run(index)
        finished = None
        for event in run:
            if callback is not None:
                callback(event, index)
            if isinstance(event, Finished):
                finished = event
        outputs[index] = finished.output
        finished.history.notes.extend(problem.notes)
        histories.append(finished.history)
    return RestoreResult(problem.to_user(outputs), problem.corrupted(), problem.masks, histories,
                         problem.config, task, problem.notes)
