"""Check everything and convert to engine form: :func:`prepare` makes a :class:`Problem`.

Every input is checked here, before any network is built, with an error that
says what to do; the engine's own checks (:mod:`src_core.engine.spec`) are
shared, not restated.
"""

from __future__ import annotations

import warnings

import numpy as np

from .classical import METHODS, anisotropic, check_method, check_spacing
from .config import RunConfig, preset
from .devices import resolve_device
from .engine.spec import NO_OBSERVED_PIXEL, check_keep_observed, operator_and_mask
from .errors import DIPError
from .fidelity import Fidelity, make_fidelity
from .imaging import Layout, LazySlices, Scaling, check_reference, is_lazy, reference_scaling
from .masks import bernoulli_mask
from .operators import Operator, split_mask, volume_blurs
from .problem import Problem
from .tasks import Task, get_task, take_options
from . import budget as budgets
from . import speed

#: observed pixels held out of the fit by default, to measure quality without ground truth
DEFAULT_VALIDATE = 0.05
#: fewer held-out pixels than this measure nothing reliably: validation is switched off
MIN_HELD_OUT = 64


def make_config(task: str | Task = "inpaint", preset_name: str | None = None,
                config: RunConfig | None = None, task_options: dict | None = None,
                **overrides) -> RunConfig:
    """A validated RunConfig from a preset (or a given config) plus overrides.

    With neither a preset nor a config, the preset fits the device the run
    will use (:meth:`src_core.tasks.Task.default_preset`).
    """
    task = task if isinstance(task, Task) else get_task(task)
    if config is not None and preset_name is not None:
        raise DIPError("give either a preset or a config, not both.")
    if isinstance(config, dict):  # e.g. the "config" of a saved history
        config = RunConfig.from_dict(config)
    if config is not None and not isinstance(config, RunConfig):
        raise DIPError(f"config must be a RunConfig or a dict of settings (got {type(config).__name__}).")
    if config is not None:
        return config.replace(**overrides).validate()
    if preset_name is not None and not isinstance(preset_name, str):
        raise DIPError(f"preset must be a preset name (got {preset_name!r}); see src_core.preset_names().")
    if preset_name is None:
        device = resolve_device(overrides.get("device", "auto"))
        preset_name, task_settings = task.default_preset(device.type, task_options or {})
        overrides = {**task_settings, **overrides}
    return preset(preset_name, **overrides)


def prepare(image, mask=None, *, task: str | None = None, reference=None,
            missing_fraction: float = 0.5, mask_seed: int = 0, channel_axis="auto",
            preset: str | None = None, config: RunConfig | None = None,
            keep_observed: bool | None = None, validate: float | None = None,
            classical: str | None = "auto", threads=None, operator: Operator | None = None,
            budget=None, stack: str | None = None, spacing=None, **overrides) -> Problem:
    """Check everything and convert to engine form; no network is built yet.

    ``task``: one of ``src_core.TASKS`` (default "inpaint"), with its own
    options by name (``factor=4`` for "sr", ``psf=`` a Gaussian sigma or a
    2D PSF array for "deconvolve").  ``operator``: your own degradation
    instead of a task (a :class:`src_core.operators.Operator`, e.g.
    ``Blur(psf).then(Downsample(2))``); ``mask`` then marks the observed
    pixels of the observation, and ``reference`` is at the answer's size.

    ``keep_observed`` (default: on, except for denoising): the answer equals
    the input wherever it was observed.  ``validate`` (default 0.05): the
    fraction of observed pixels held out of the fit to measure quality
    without ground truth (0 = off).  ``classical`` ("auto": biharmonic for
    inpainting, non-local means for denoising; or "tv", "tv-denoise", None):
    the instant classical answer, reported beside DIP's and, with held-out
    pixels, blended with it.  ``threads`` (CPU runs): torch threads for each
    run, set for the run and put back after it; default: the cores other work
    leaves free (:func:`src_core.speed.default_threads`), since more threads
    than free cores is many times slower.  ``stack``: what a stack's slices are: "z"
    (planes of a volume: the classical answer is 3D, with the voxel ``spacing`` (z, y, x)
    if given; a ``spacing`` alone means "z"), "t" or None (independent slices, each on
    its own: a time-lapse, a batch).  DIP itself runs per slice either way.
    """
    spec = task_for(task, operator)
    task_options = take_options(spec, overrides)
    operator, mask = operator_and_mask(spec.operator(**task_options) if operator is None else operator, mask)
    cfg = make_config(spec, preset, config, task_options, **overrides)
    budget_s = budgets.requested_seconds(budget, overrides, preset is None and config is None, cfg.preset)
    threads = speed.resolve_threads(threads, resolve_device(cfg.device))
    keep_observed = spec.keep_observed if keep_observed is None else keep_observed
    check_keep_observed(keep_observed, operator)
    classical = _classical_method(spec, classical, operator)
    validate = _validate_fraction(validate)
    stack, spacing = _stack_kind(stack, spacing)
    notes = []
    image, layout, images, plain, scaling = _scaled(image, channel_axis, spec, notes)
    masks, reference = _task_masks(spec, mask, layout, images.shape, image, reference, missing_fraction,
                                   mask_seed, notes)
    if spec.ema and cfg.ema == 0:
        cfg = cfg.replace(ema=spec.ema)
        notes.append(f"{spec.name}: the answer is the EMA of outputs (ema={spec.ema})")
    answer_layout = _answer_layout(operator, layout, images.shape[1:], cfg, notes)
    stack = _stack_for_psf(operator, images.shape[0], stack, notes)
    warned: list = []  # the notes a user must see (napari shows them; the CLI warns)
    images, masks = _observed_only(images, masks, notes, warned)
    references = _references(reference, image, layout, answer_layout, scaling, spec)
    held_out = _held_out(masks, validate, cfg.seed, notes, warned)
    cfg, fitted = _fit_budget(cfg, budget_s, images.shape, operator, threads, classical, held_out is not None,
                              spec, notes)
    problem = Problem(spec.name, cfg, layout, scaling, images, masks, references, notes,
                      keep_observed=bool(keep_observed), held_out=held_out, classical=classical,
                      validate=float(validate) if held_out is not None else 0.0, threads=threads,
                      operator=operator, psnr_peak=plain.scale / scaling.scale,
                      fidelity=fidelity_for(cfg, scaling), budget=fitted, warnings=warned, stack=stack,
                      spacing=spacing)
    if problem.volumetric and classical == "richardson-lucy":
        notes.append(f"classical: richardson-lucy over the z-stack in 3D with the {operator.volume.shape[0]}-plane "
                     f"PSF (DIP runs per slice with its in-focus plane {operator.focus})")
    elif problem.volumetric:
        at = "" if not anisotropic(spacing) else (
            " on the voxel grid or with the spacing z {:g}, y {:g}, x {:g}, whichever predicts the held-out voxels "
            "better".format(*spacing))
        notes.append(f"classical: {classical} over the z-stack in 3D{at} (DIP runs per slice)")
    elif stack == "z" and problem.slices > 1 and classical is not None:
        why = ("the stack is read a slice at a time" if not isinstance(images, np.ndarray)
               else "the PSF is 2D: it blurs no plane into another" if classical == "richardson-lucy"
               else f"{classical} has no 3D form here")
        notes.append(f"classical: {classical} per slice ({why})")
    if cfg.fidelity != "mse":
        notes.append(f"fidelity: {cfg.fidelity} ({problem.fidelity.describe()})")
    if problem.blends:
        notes.append(f"blend: DIP and the {classical} answer mixed by the weight that best fits the "
                     "held-out pixels" + ("" if operator.identity else f" (through {operator!r})"))
    return problem


def _fit_budget(cfg: RunConfig, seconds: float | None, shape, operator: Operator, threads, classical,
                held_out: bool, spec: Task, notes: list):
    """(the configuration with the iteration count that fits ``seconds`` per image, and the
    :class:`src_core.budget.Fitted`); (unchanged, None) where no budget applies."""
    if seconds is None:
        return cfg, None
    c, h, w = shape[1:]
    fitted = budgets.fit_run(cfg, spec, c, (h, w), budget_s=seconds, operator=operator, threads=threads,
                             classical=classical, blends=held_out, window=cfg.early_stop and not held_out)
    notes.append(fitted.note())
    return fitted.config, fitted


def _answer_layout(operator: Operator, layout: Layout, chw_shape, cfg: RunConfig, notes: list) -> Layout:
    """The answer's layout (super-resolution's is larger), checked against the network's sizes."""
    operator.check(chw_shape)
    answer_layout = layout.resized(operator.output_shape(chw_shape)[1:])
    if operator.factor > 1:
        notes.append(f"{operator!r}: the answer is {operator.factor}x larger along Y and X "
                     f"({answer_layout.spatial_shape[0]}x{answer_layout.spatial_shape[1]})")
    problem = cfg.network.size_problem(*answer_layout.spatial_shape)
    if problem:
        raise DIPError(problem if operator.factor == 1 else
                       f"the answer is {operator.factor}x the input along Y and X; {problem}")
    return answer_layout


def _stack_for_psf(operator: Operator, planes: int, stack: str | None, notes: list) -> str | None:
    """A 3D PSF (anywhere in the operator) fits a z-stack only, refused before any work
    otherwise; a stack of no stated kind with a 3D PSF is a z-stack (as with a spacing)."""
    blurs = volume_blurs(operator)
    if blurs and stack is None and planes > 1:
        stack = "z"
        notes.append("stack: a z-stack, since the PSF is 3D")
    for op in blurs:
        op.check_volume(planes, stack)
    return stack


def fidelity_for(config: RunConfig, scaling: Scaling) -> Fidelity:
    """The run's data term in engine units: a Poisson term counts photons as
    ``(value - photon_offset) / photon_gain`` of the user's values."""
    gain, offset = config.photon_gain, config.photon_offset
    return make_fidelity(config.fidelity, photons_per_unit=scaling.scale / gain,
                         photons_at_zero=(scaling.offset - offset) / gain)


def _classical_method(spec: Task, classical, operator: Operator) -> str | None:
    classical = spec.classical if classical == "auto" else classical
    if classical is not None and classical not in METHODS:
        raise DIPError(f"classical must be 'auto', None or one of {METHODS} (got {classical!r}).")
    if classical is not None:
        check_method(classical, operator)
    return classical


STACK_KINDS = ("z", "t")


def _stack_kind(stack, spacing):
    """(the stack kind, the checked spacing): a spacing implies a z-stack; refused before any work."""
    if stack is not None and stack not in STACK_KINDS:
        raise DIPError(f"stack must be 'z' (planes of a volume), 't' (a time-lapse: independent slices) or None "
                       f"(got {stack!r}).")
    if spacing is None:
        return stack, None
    if stack == "t":
        raise DIPError("a voxel spacing is for a z-stack (stack='z'); a time-lapse's slices are restored on their "
                       "own. Drop spacing, or pass stack='z'.")
    return "z", check_spacing(spacing)


def _validate_fraction(validate) -> float:
    validate = DEFAULT_VALIDATE if validate is None else validate
    if isinstance(validate, bool) or not isinstance(validate, (int, float)) or not 0 <= validate < 0.5:
        raise DIPError(f"validate is the fraction of observed pixels held out, in [0, 0.5) "
                       f"(got {validate!r}); 0 switches it off.")
    return validate


def _scaled(image, channel_axis, spec: Task, notes: list):
    """(the image as an array or a lazy stack, its layout, the images in [0, 1] (N, C, H, W),
    the input's scaling, the answer's scaling,
    with the task's headroom); a dask or zarr stack is checked in one streaming pass and read a
    slice at a time."""
    if isinstance(image, (list, tuple)):
        _check_same_shapes(image)
    lazy = is_lazy(image) and Layout.infer(image.shape, channel_axis).slices > 1
    if not lazy:
        image = np.asarray(image)
    layout = Layout.infer(image.shape, channel_axis)
    if lazy:
        images = LazySlices.of(image, layout)
        plain = images.scaling
        scaling = images.scaling = plain.with_headroom(spec.headroom)
    else:
        plain = Scaling.for_image(image)
        scaling = plain.with_headroom(spec.headroom)
        images = layout.to_nchw(scaling.to_unit(image)).copy()
    if scaling != plain:
        notes.append(f"{spec.name}: the answer may reach {scaling.scale / plain.scale:.3g}x the input's range "
                     "above its darkest value (a blur lowers peaks)")
    return image, layout, images, plain, scaling


def _check_same_shapes(slices) -> None:
    """A stack given as a list of slices: refused, saying which shapes, unless they are one shape."""
    shapes = sorted({tuple(np.shape(one)) for one in slices})
    if len(shapes) > 1:
        raise DIPError(f"a stack's slices must all have one shape; these have {len(shapes)}: "
                       f"{', '.join(map(str, shapes[:4]))}{' ...' if len(shapes) > 4 else ''}. Crop or pad them to "
                       "one size, or restore them one by one (dip batch takes files of any sizes).")


def _task_masks(spec: Task, mask, layout: Layout, shape, image, reference, missing_fraction, mask_seed, notes):
    """(the observed pixels (N, C, H, W), the reference): the user's mask, or the task's."""
    if spec.mask == "required":
        if mask is None:
            raise DIPError("inpainting needs a mask (True/1 = observed, False/0 = missing); "
                           "for a random mask use task='random'.")
    elif spec.mask == "random":
        if mask is not None:
            raise DIPError("task='random' makes its own Bernoulli mask; "
                           "pass your mask with task='inpaint' instead.")
        no_channel = tuple(s for i, s in enumerate(layout.shape) if i != layout.channel_axis)
        masks = layout.mask_to_nchw(bernoulli_mask(no_channel, missing_fraction, mask_seed)).copy()
        notes.append(f"random mask: {missing_fraction:.0%} of pixels missing, mask_seed={mask_seed}")
        return masks, image if reference is None else reference
    if mask is None:
        return np.ones(shape, dtype=bool), reference
    return layout.mask_to_nchw(_as_bool_mask(mask)).copy(), reference


def _observed_only(images, masks, notes, warned: list):
    """Non-finite values become missing pixels; every slice must observe something."""
    lazy = isinstance(images, LazySlices)
    finite = True if lazy else np.isfinite(images)  # (a lazy stack was checked as it was read)
    if not np.all(finite):
        bad = int((~finite).sum())
        message = f"{bad} non-finite pixel values (NaN/inf) were treated as missing"
        warnings.warn(message, stacklevel=3)
        notes.append(message)
        warned.append(message)
        masks &= finite
        images = np.where(finite, images, 0.0).astype(np.float32)
    if not masks.any():
        raise DIPError(NO_OBSERVED_PIXEL)
    empty = [i for i in range(len(masks)) if not masks[i].any()]
    if empty:  # every slice is checked before the first one runs
        raise DIPError(f"slice{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty[:10]))} of "
                       f"{len(masks)} {'have' if len(empty) > 1 else 'has'} no observed pixel (fully "
                       "masked or all NaN); nothing to fit there. Fix the mask, or restore the other "
                       "slices on their own.")
    if lazy:
        images.masks = masks  # each slice read is masked
    else:
        images *= masks  # missing pixels carry no information; zero them for display and loss
    return images, masks


def _references(reference, image, layout: Layout, answer_layout: Layout, scaling: Scaling, spec: Task):
    if reference is None:
        return None
    if is_lazy(image) and reference is image and layout.slices > 1:  # task random: the stack's own slices
        return LazySlices.of(image, layout, scaling, clip=True)
    reference = np.asarray(reference)
    check_reference(reference.shape, answer_layout.shape, image.shape)
    references = answer_layout.to_nchw(reference_scaling(scaling, image.dtype, reference).to_unit(reference)).copy()
    if not np.isfinite(references).all():
        if spec.name == "random" and reference is image:
            raise DIPError("task 'random' measures PSNR against the image itself, so the image "
                           "must be clean, but it has NaN or inf values; restore it with "
                           "task='inpaint' and a mask of its finite pixels instead.")
        raise DIPError("the reference has non-finite values; a reference must be clean.")
    return np.clip(references, 0.0, 1.0)


def _held_out(masks, validate: float, seed: int, notes: list, warned: list):
    """Observed pixels held out of the fit (drawn from the run's seed), or None."""
    if validate <= 0:
        return None
    n, _, h, w = masks.shape
    rng = np.random.default_rng([seed, 20181])
    held_out = masks & (rng.random((n, 1, h, w)) < validate)
    if held_out.reshape(len(held_out), -1).sum(axis=1).min() < MIN_HELD_OUT:
        message = (f"too few observed pixels to hold {validate:.0%} out for validation; validation is off "
                   "(so no blend with the classical answer)")
        notes.append(message)
        warned.append(message)
        return None
    notes.append(f"validation: {validate:.0%} of observed pixels held out of the fit "
                 f"(seed {seed}); the answer is the best-validated iterate")
    return held_out


def task_for(task, operator) -> Task:
    """The registered task, or for a user's own operator a task that knows only that."""
    if operator is None:
        return get_task("inpaint" if task is None else task)
    if task is not None:
        raise DIPError(f"give a task or your own operator, not both (got task={task!r} and an operator).")
    split_mask(operator)  # checks that it is an Operator
    return Task("custom", "your own operator", mask="optional", presets=("restore",),
                classical=None, keep_observed=False)


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
