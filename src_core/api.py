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

The answer is worth having at every budget (docs/results/quality): with no
preset, the preset fits the device (the paper's GPU-sized settings would
take hours on a CPU); observed pixels are kept; a few observed pixels are
held out of the fit to measure quality without ground truth, which picks the
best iterate and blends DIP with the instant classical answer (biharmonic
for inpainting, non-local means for denoising, Richardson-Lucy for
deconvolution, judged through the blur) by the weight that fits the held-out
pixels best.  For denoising the held-out pixels are noisy, but their
noise is independent of both estimates there (neither method saw them), so
their squared error is the true one plus the noise variance: the same choice.  ``validate=0,
classical=None, keep_observed=False`` is the paper's raw protocol.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from .checkpoint import fingerprint
from .classical import METHODS, check_method, classical_answer
from .config import RunConfig, preset
from .devices import resolve_device
from .engine import DIPRun, Finished, History, psnr_from_mse, psnr_ssim
from .engine.spec import NO_OBSERVED_PIXEL, check_keep_observed, operator_and_mask
from .errors import DIPError
from .fidelity import MSE, Fidelity, make_fidelity
from .imaging import Layout, LazySlices, Scaling, check_reference, is_lazy, reference_scaling
from .masks import bernoulli_mask
from .operators import Identity, Operator, fingerprint_terms, split_mask
from .parts import PartStore, _ranges, solve_parts
from .tasks import Task, get_task, take_options
from . import speed, timing

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
    keep_observed: bool = False
    held_out: np.ndarray | None = None   # (N, C, H, W) bool: observed, but not fitted
    classical: str | None = None         # the classical method compared (and blended) with
    validate: float = 0.0                # the fraction of observed pixels held out
    threads: int | None = None           # CPU threads of each run (None: not a CPU run)
    operator: Operator = field(default_factory=Identity)  # the degradation (the mask aside)
    psnr_peak: float = 1.0               # the input's range in [0, 1] units (less with headroom)
    fidelity: Fidelity = field(default_factory=MSE)  # the data term, in engine units
    _classical_cache: dict = field(default_factory=dict, repr=False)

    @property
    def slices(self) -> int:
        return self.images.shape[0]

    @property
    def blends(self) -> bool:
        """With held-out pixels, DIP is blended with the classical answer wherever the answer
        has the observation's size, each judged by what it predicts there through the operator
        (for deconvolution, the blur: a short CPU run can end far from done,
        docs/results/deconvolution_low_noise).  Not for super-resolution: the bicubic answer
        is a smooth guess, not a fit of the pixels, so its prediction of held-out pixels says
        little about its detail."""
        return self.held_out is not None and self.classical is not None and self.operator.factor == 1

    def observe(self, chw: np.ndarray) -> np.ndarray:
        """The observation an answer (C, H, W) predicts: the operator applied (a blur, a
        downsampling), or the answer itself."""
        if self.operator.identity:
            return chw
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))[None]
            return self.operator.to("cpu").apply(x)[0].numpy()

    @property
    def output_layout(self) -> Layout:
        """The user's layout for the answer (super-resolution makes Y and X larger)."""
        return self.layout.resized(self.operator.output_shape(self.images.shape[1:])[1:])

    def placeholder(self, index: int) -> np.ndarray:
        """What a slice that was not run is given back as: its input (enlarged if need be)."""
        return _enlarge(self.images[index], self.operator.factor)

    def fitted_mask(self, index: int) -> np.ndarray:
        mask = self.masks[index]
        return mask if self.held_out is None else mask & ~self.held_out[index]

    def run(self, index: int = 0, stop=None, checkpoint=None) -> DIPRun:
        ref = None if self.references is None else self.references[index]
        mask = self.fitted_mask(index)
        if not mask.any():
            raise DIPError(f"slice {index} has no observed pixel; nothing to fit there.")
        held = None if self.held_out is None else self.held_out[index]
        return DIPRun(self.images[index], mask, self.config, ref, validation=held,
                      keep_observed=self.keep_observed, stop=stop, threads=self.threads,
                      checkpoint=checkpoint, operator=self.operator, psnr_peak=self.psnr_peak,
                      fidelity=self.fidelity)

    def part(self, index: int, threads: int | None = None) -> "Problem":
        """Slice ``index`` alone, as a one-slice problem (views of in-memory arrays; a lazy
        stack's slice is read now): run on its own, here or on a cluster, it gives that
        slice's answer exactly."""
        cut = slice(index, index + 1)
        return replace(self, images=self.images[cut], masks=self.masks[cut],
                       references=None if self.references is None else self.references[cut],
                       held_out=None if self.held_out is None else self.held_out[cut],
                       notes=list(self.notes), threads=self.threads if threads is None else threads,
                       _classical_cache={(0, fitted): answer for (i, fitted), answer
                                         in self._classical_cache.items() if i == index})

    def fingerprint(self, *extra) -> str:
        """Of everything that decides the answer (the data, the settings, the operator)."""
        return fingerprint(self.images, self.masks, self.held_out, self.references, self.config.to_json(),
                           self.keep_observed, self.classical, self.validate,
                           *fingerprint_terms(self.operator), *extra)

    def solve(self, stop=None, store=None, client=None):
        """Restore the slices: the one slice loop of the API, the CLI and the widget.

        Here in order, or on a Dask ``client`` all at once (each slice one task;
        a CPU run there takes one thread a task).  Yields what
        :func:`src_core.parts.solve_parts` yields; slice i's classical answer
        is kept once it ran.  Each slice is made (a lazy stack's read) only
        when its turn comes.
        """
        threads = 1 if client is not None and self.threads is not None else None
        parts = [(i, partial(self.part, i, threads)) for i in range(self.slices)]
        for kind, index, payload in solve_parts(parts, stop=stop, store=store, client=client, notes=self.notes):
            if kind in ("answer", "loaded") and payload[2] is not None:
                self._classical_cache[(index, False)] = (payload[2], payload[1].summary.get("classical_seconds", 0.0))
            yield kind, index, payload

    def computed_classical(self, index: int) -> np.ndarray | None:
        """Slice ``index``'s classical answer if it was computed already (None otherwise)."""
        cached = self._classical_cache.get((index, False))
        return None if cached is None else cached[0]

    def estimate(self, measure: bool = True) -> timing.Estimate:
        """How long the whole run takes here, before it starts (:mod:`src_core.timing`): the
        network's step measured on this machine, and slice 0's classical answers timed for
        real (kept for the run, so that work is not done twice).  ``measure=False``: no
        calibration and no classical answer, only what is known already (instant)."""
        c, h, w = self.images.shape[1:]
        classical_s = self.slices * self.classical_seconds(0) if measure and self.classical is not None else 0.0
        window = self.config.early_stop and self.held_out is None  # ES-WMV, not the held-out rule
        return timing.estimate(self.config, c, (h, w), slices=self.slices, operator=self.operator,
                               threads=self.threads, classical_s=classical_s, window=window, measure=measure)

    def classical_seconds(self, index: int) -> float:
        """The classical answers slice ``index`` needs (the blend's from the fitted pixels too),
        computed now if they were not yet: the seconds they took."""
        seconds = self.classical_answer(index)[1]
        if self.blends:
            seconds += self.classical_answer(index, fitted_only=True)[1]
        return seconds

    def classical_answer(self, index: int, fitted_only: bool = False) -> tuple[np.ndarray, float]:
        """The classical method's answer for one slice, and the seconds it took.

        ``fitted_only``: from the fitted pixels alone (the held-out ones are
        then holes for it too, so both methods are judged on them alike).
        """
        key = (index, fitted_only)
        if key not in self._classical_cache:
            mask = self.fitted_mask(index) if fitted_only else self.masks[index]
            t0 = time.perf_counter()
            answer = classical_answer(self.classical, self.images[index], mask, self.operator)
            self._classical_cache[key] = (answer, time.perf_counter() - t0)
        return self._classical_cache[key]

    def answer(self, index: int, finished: Finished) -> np.ndarray:
        """The final (C, H, W) answer of a slice from its run's last event.

        Blends with the classical fill where that was asked for, puts the
        observed pixels back, and writes ``history.summary``: the answer's,
        DIP's, the classical method's and the corrupted input's PSNR (with a
        reference) and their validation PSNR on the held-out pixels.
        """
        history = finished.history
        dip = np.asarray(finished.output, dtype=np.float32)
        observed = self.masks[index]
        summary = {"keep_observed": self.keep_observed, "classical_method": self.classical,
                   "answer_iteration": history.answer_iteration, "blend_alpha": None}
        answer = dip
        if self.classical is not None:
            classical, seconds = self.classical_answer(index)
            summary["classical_seconds"] = seconds
        if self.held_out is not None:  # judged on what each answer predicts there (through the operator)
            held = self.held_out[index]
            truth = self.images[index][held]
            summary["held_out_pixels"] = int(held.sum())
            dip_seen = self.observe(dip)[held]
            summary["val_psnr_dip"] = _psnr(dip_seen, truth, self.psnr_peak)
            if self.blends:
                fitted_only, _ = self.classical_answer(index, fitted_only=True)
                classical_seen = self.observe(fitted_only)[held]
                alpha = blend_weight(dip_seen, classical_seen, truth)
                summary["blend_alpha"] = alpha
                summary["val_psnr_classical"] = _psnr(classical_seen, truth, self.psnr_peak)
                summary["val_psnr_answer"] = _psnr(alpha * dip_seen + (1 - alpha) * classical_seen, truth,
                                                   self.psnr_peak)
                answer = alpha * dip + (1 - alpha) * classical
        def kept(x):
            return np.where(observed, self.images[index], x) if self.keep_observed else x

        answer = np.clip(kept(answer), 0.0, 1.0).astype(np.float32)
        if self.references is not None:
            ref = self.references[index]
            peak = self.psnr_peak
            summary["psnr_answer"] = psnr_ssim(answer, ref, with_ssim=False, peak=peak)[0]
            summary["psnr_dip"] = psnr_ssim(kept(dip), ref, with_ssim=False, peak=peak)[0]
            if self.operator.factor == 1:  # the observation itself, as an answer
                summary["psnr_corrupted"] = psnr_ssim(self.images[index] * observed, ref,
                                                      with_ssim=False, peak=peak)[0]
            if self.classical is not None:
                summary["psnr_classical"] = psnr_ssim(classical, ref, with_ssim=False, peak=peak)[0]
                summary["iterations_to_classical"] = _first_reaching(history, summary["psnr_classical"])
        history.summary = summary
        return answer

    def corrupted(self) -> np.ndarray:
        """The observed image (missing pixels at the low end), in the user's form."""
        return self.to_user(self.images * self.masks)

    def to_user(self, nchw: np.ndarray) -> np.ndarray:
        """(N, C, H, W) in [0, 1] -> the user's layout, dtype and range (for inputs or answers)."""
        layout = self.layout if nchw.shape[-2:] == self.images.shape[-2:] else self.output_layout
        return self.scaling.from_unit(layout.from_nchw(nchw))

    def slice_to_user_float(self, chw: np.ndarray) -> np.ndarray:
        """One engine slice as (H, W) or (H, W, C) float in [0, 1], for previews."""
        chw = np.asarray(chw)
        if self.layout.channel_axis is None:
            return chw[0]
        return np.moveaxis(chw, 0, -1)


def blend_weight(dip: np.ndarray, classical: np.ndarray, truth: np.ndarray) -> float:
    """The weight a in [0, 1] minimising ||a dip + (1 - a) classical - truth||^2 (closed form)."""
    diff = (dip - classical).astype(np.float64).ravel()
    denom = float(diff @ diff)
    if denom <= 1e-12:
        return 1.0
    return float(np.clip(((truth - classical).astype(np.float64).ravel() @ diff) / denom, 0.0, 1.0))


def _psnr(estimate: np.ndarray, truth: np.ndarray, peak: float = 1.0) -> float | None:
    if estimate.size == 0:
        return None
    return psnr_from_mse(float(np.mean((np.clip(estimate, 0, 1).astype(np.float64) - truth) ** 2)), peak)


def _first_reaching(history: History, level: float) -> int | None:
    for it, value in zip(history.iterations, history.psnr):
        if value is not None and value >= level:
            return it
    return None


def prepare(image, mask=None, *, task: str | None = None, reference=None,
            missing_fraction: float = 0.5, mask_seed: int = 0, channel_axis="auto",
            preset: str | None = None, config: RunConfig | None = None,
            keep_observed: bool | None = None, validate: float | None = None,
            classical: str | None = "auto", threads=None, operator: Operator | None = None,
            **overrides) -> Problem:
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
    than free cores is many times slower.
    """
    spec = _task_for(task, operator)
    task_options = take_options(spec, overrides)
    operator, mask = operator_and_mask(spec.operator(**task_options) if operator is None else operator, mask)
    cfg = make_config(spec, preset, config, task_options, **overrides)
    threads = speed.resolve_threads(threads, resolve_device(cfg.device))
    keep_observed = spec.keep_observed if keep_observed is None else keep_observed
    check_keep_observed(keep_observed, operator)
    classical = _classical_method(spec, classical, operator)
    validate = _validate_fraction(validate)
    notes = []
    image, layout, images, plain, scaling = _scaled(image, channel_axis, spec, notes)
    masks, reference = _task_masks(spec, mask, layout, images.shape, image, reference, missing_fraction,
                                   mask_seed, notes)
    if spec.ema and cfg.ema == 0:
        cfg = cfg.replace(ema=spec.ema)
        notes.append(f"{spec.name}: the answer is the EMA of outputs (ema={spec.ema})")
    operator.check(images.shape[1:])
    answer_layout = layout.resized(operator.output_shape(images.shape[1:])[1:])
    if operator.factor > 1:
        notes.append(f"{operator!r}: the answer is {operator.factor}x larger along Y and X "
                     f"({answer_layout.spatial_shape[0]}x{answer_layout.spatial_shape[1]})")
    images, masks = _observed_only(images, masks, notes)
    references = _references(reference, image, layout, answer_layout, scaling, spec)
    problem = cfg.network.size_problem(*answer_layout.spatial_shape)
    if problem:
        raise DIPError(problem if operator.factor == 1 else
                       f"the answer is {operator.factor}x the input along Y and X; {problem}")
    held_out = _held_out(masks, validate, cfg.seed, notes)
    problem = Problem(spec.name, cfg, layout, scaling, images, masks, references, notes,
                      keep_observed=bool(keep_observed), held_out=held_out, classical=classical,
                      validate=float(validate) if held_out is not None else 0.0, threads=threads,
                      operator=operator, psnr_peak=plain.scale / scaling.scale,
                      fidelity=fidelity_for(cfg, scaling))
    if cfg.fidelity != "mse":
        notes.append(f"fidelity: {cfg.fidelity} ({problem.fidelity.describe()})")
    if problem.blends:
        notes.append(f"blend: DIP and the {classical} answer mixed by the weight that best fits the "
                     "held-out pixels" + ("" if operator.identity else f" (through {operator!r})"))
    return problem


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


def _observed_only(images, masks, notes):
    """Non-finite values become missing pixels; every slice must observe something."""
    lazy = isinstance(images, LazySlices)
    finite = True if lazy else np.isfinite(images)  # (a lazy stack was checked as it was read)
    if not np.all(finite):
        bad = int((~finite).sum())
        message = f"{bad} non-finite pixel values (NaN/inf) were treated as missing"
        warnings.warn(message, stacklevel=3)
        notes.append(message)
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


def _held_out(masks, validate: float, seed: int, notes: list):
    """Observed pixels held out of the fit (drawn from the run's seed), or None."""
    if validate <= 0:
        return None
    n, _, h, w = masks.shape
    rng = np.random.default_rng([seed, 20181])
    held_out = masks & (rng.random((n, 1, h, w)) < validate)
    if held_out.reshape(len(held_out), -1).sum(axis=1).min() < MIN_HELD_OUT:
        notes.append(f"too few observed pixels to hold {validate:.0%} out for validation; validation is off")
        return None
    notes.append(f"validation: {validate:.0%} of observed pixels held out of the fit "
                 f"(seed {seed}); the answer is the best-validated iterate")
    return held_out


def _cut_short(history: History, config: RunConfig) -> bool:
    """A stop request ended this run before its iterations (its answer is partial)."""
    return bool(history.timings.get("stopped_by_user")) and history.timings.get("iterations", 0) < config.iterations


def _enlarge(chw: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel repeated ``factor`` times along Y and X (the input at an SR answer's size)."""
    return chw if factor == 1 else np.repeat(np.repeat(chw, factor, axis=-2), factor, axis=-1)


def _task_for(task, operator) -> Task:
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
    classical: np.ndarray | None = None   # the classical method's answer, in the user's form
    keep_observed: bool = False
    validate: float = 0.0
    stopped: bool = False               # stopped early on request: a partial answer

    @property
    def history(self) -> History:
        """The history of the first (for a 2D image, the only) slice."""
        return self.histories[0]

    def to_dict(self) -> dict:
        return {"task": self.task, "config": self.config.to_dict(), "notes": self.notes,
                "stopped": self.stopped,
                "answer": {"keep_observed": self.keep_observed, "validate": self.validate,
                           "classical": self.histories[0].summary.get("classical_method")
                           if self.histories else None},
                "slices": [h.to_dict() for h in self.histories]}


def restore(image, mask=None, *, task: str | None = None, reference=None, missing_fraction: float = 0.5,
            mask_seed: int = 0, channel_axis="auto", preset: str | None = None,
            config: RunConfig | None = None, keep_observed: bool | None = None,
            validate: float | None = None, classical: str | None = "auto", callback=None,
            stop=None, threads=None, checkpoint_dir=None, checkpoint_every_s: float = 300.0,
            operator: Operator | None = None, client=None, **overrides) -> RestoreResult:
    """Restore an image with Deep Image Prior; returns the result and its history.

    ``image``: (Y, X), (Y, X, C) or a stack (Z/T, Y, X[, C]); uint8, uint16 or
    float.  The result has the input's shape, dtype and value range.  ``mask``:
    True/1 = observed.  ``preset``: one of ``src_core.preset_names()``
    (default: one that fits the device: ``cpu`` on a CPU, the paper's setting
    for the task on a GPU); any RunConfig or NetworkConfig field can be
    overridden by keyword.  ``task`` options (``factor``, ``psf``), ``operator``,
    ``keep_observed``, ``validate``, ``classical`` and ``threads``: see :func:`prepare`.  ``callback(event, slice_index)`` sees every event.
    ``stop`` (a ``threading.Event``): once set, the current slice finishes
    after its current iteration with its partial answer, later slices are
    not run (they keep the input), and ``result.stopped`` is True.
    ``checkpoint_dir``: long work survives a crash, a kill or a stop: each
    finished slice is kept there, and the running one saves its state every
    ``checkpoint_every_s`` seconds; calling again with the same folder skips
    the finished slices and resumes the interrupted one where it was (a
    checkpoint made for other data or settings is refused).  When a slice
    after the first fails, the DIPError raised has the finished slices in
    its ``partial`` result.  ``client`` (a ``distributed.Client``): a stack's
    slices run there at once, one task each (``callback`` then sees no events;
    ``checkpoint_dir`` must be a folder the workers can reach).

    >>> import numpy as np, src_core
    >>> img = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    >>> result = src_core.restore(img, task="random", preset="cpu", scales=2, iterations=10)
    >>> result.image.dtype, result.image.shape, len(result.history.loss)
    (dtype('uint8'), (32, 32), 10)
    """
    problem = prepare(image, mask, task=task, reference=reference, missing_fraction=missing_fraction,
                      mask_seed=mask_seed, channel_axis=channel_axis, preset=preset, config=config,
                      keep_observed=keep_observed, validate=validate, classical=classical,
                      threads=threads, operator=operator, **overrides)
    return restore_problem(problem, image, callback=callback, stop=stop, checkpoint_dir=checkpoint_dir,
                           checkpoint_every_s=checkpoint_every_s, client=client)


def restore_problem(problem: Problem, image, *, callback=None, stop=None, checkpoint_dir=None,
                    checkpoint_every_s: float = 300.0, client=None) -> RestoreResult:
    """Run a prepared problem slice by slice (what :func:`restore` does after :func:`prepare`).

    ``image`` is the user's input, which slices that were not run are given
    back as; the other arguments are :func:`restore`'s.
    """
    outputs = np.empty((problem.slices, *problem.operator.output_shape(problem.images.shape[1:])),
                       dtype=np.float32)
    histories: dict[int, History] = {}
    store = (PartStore(checkpoint_dir, problem.fingerprint(), checkpoint_every_s)
             if checkpoint_dir is not None else None)

    def result() -> RestoreResult:
        missing = [i for i in range(problem.slices) if i not in histories]
        source = None  # slices not run keep the input, unmasked (read one by one: it may be a lazy stack)
        if missing and problem.operator.factor == 1:
            source = (LazySlices.of(image, problem.layout, problem.scaling) if is_lazy(image)
                      else problem.layout.to_nchw(problem.scaling.to_unit(np.asarray(image))))
        for i in missing:
            outputs[i] = problem.placeholder(i) if source is None else source[i]
        classical_images = None
        if problem.classical is not None:
            classical_images = problem.to_user(np.stack([problem.classical_answer(i)[0]
                                                         for i in range(problem.slices)]))
        ordered = [histories[i] for i in sorted(histories)]
        stopped = bool(missing) or any(_cut_short(h, problem.config) for h in ordered)
        return RestoreResult(problem.to_user(outputs), problem.corrupted(), problem.masks, ordered,
                             problem.config, problem.task, problem.notes, classical_images,
                             problem.keep_observed, problem.validate, stopped)

    try:
        for kind, index, payload in problem.solve(stop=stop, store=store, client=client):
            if kind == "stopped":
                return result()
            if kind == "event" and callback is not None:
                callback(payload, index)
            elif kind in ("answer", "loaded"):
                outputs[index] = payload[0]
                histories[index] = payload[1]
    except Exception as exc:
        if not histories:
            raise
        done = sorted(histories)
        failed = getattr(exc, "part_index", None)
        which = "a slice" if failed is None else f"slice {failed} of {problem.slices}"
        error = DIPError(f"{which} failed ({type(exc).__name__}: {str(exc)[:300]}); slices "
                         f"{_ranges(done)} finished and are kept in this error's .partial result")
        problem.notes.append(f"{which} failed: {str(exc)[:300]}")
        error.partial = result()
        raise error from exc
    return result()


def restore_tiled(image, mask=None, *, tile="auto", overlap: int | None = None, task: str | None = None,
                  reference=None, callback=None, stop=None, channel_axis="auto", preset: str | None = None,
                  config: RunConfig | None = None, keep_observed: bool | None = None,
                  validate: float | None = None, classical: str | None = "auto", threads=None,
                  operator: Operator | None = None, client=None, checkpoint_dir=None,
                  checkpoint_every_s: float = 300.0, **overrides) -> RestoreResult:
    """Restore one large 2D image in overlapping tiles (:mod:`src_core.tiles`), blended back.

    Takes :func:`restore`'s arguments, plus ``tile`` (the side in pixels, or
    "auto": the largest that fits in half the device's free memory) and
    ``overlap`` (default: a quarter of the tile, at most the network's
    context).  For inpainting only the tiles with missing pixels run; the
    others keep the input.  ``callback(event, tile_index)`` sees every event
    of a tile run here.  ``client``: the tiles run there at once, one task
    each.  ``checkpoint_dir``: finished tiles are kept there and skipped by a
    later call with the same folder.  ``result.histories`` holds one history
    per tile that ran, and the notes say which tiles those were.
    """
    tiled = TiledProblem.prepare(image, mask, tile=tile, overlap=overlap, task=task, reference=reference,
                                 channel_axis=channel_axis, preset=preset, config=config,
                                 keep_observed=keep_observed, validate=validate, classical=classical,
                                 threads=threads, operator=operator, **overrides)
    return tiled.restore(callback=callback, stop=stop, client=client, checkpoint_dir=checkpoint_dir,
                         checkpoint_every_s=checkpoint_every_s)


@dataclass
class TiledProblem:
    """A large 2D image as overlapping tiles: one-slice problems (``parts``) for the tiles
    that run, and the blend of their answers with the input of the others."""

    whole: Problem                    # the whole image (checked and converted, never run)
    tile: int
    overlap: int
    tiles: list                       # (rows, columns, blending weight) of every tile
    parts: list                       # (tile index, one-slice Problem) of the tiles that run
    answers: dict = field(default_factory=dict)   # tile index -> (answer, history, classical or None)
    stopped: bool = False

    @classmethod
    def prepare(cls, image, mask=None, *, tile="auto", overlap=None, task=None, validate=None,
                classical="auto", threads=None, operator=None, **settings) -> "TiledProblem":
        """Check everything (the whole image and every tile that runs) before any work."""
        from .tiles import choose_tile, plan, scaled, settle_overlap, tiles_to_run

        whole = prepare(image, mask, task=task, validate=0, classical=None, threads=threads,
                        operator=operator, **settings)
        if whole.slices != 1:
            raise DIPError(f"tiles are for one 2D image; this is a stack of {whole.slices} slices. Restore the "
                           "stack with restore(), or tile each slice on its own.")
        cfg, op, f = whole.config, whole.operator, whole.operator.factor
        net = cfg.network
        if tile == "auto":
            tile = choose_tile(cfg, whole.layout.channels, resolve_device(cfg.device), factor=f)
        overlap = settle_overlap(tile, overlap, net, f)
        spec = _task_for(task, operator)
        pass_through = spec.mask in ("required", "random") and op.identity
        sub_task = None if spec.name == "custom" else {"random": "inpaint"}.get(spec.name, spec.name)
        options = {} if spec.name == "custom" else {o.name: getattr(op, o.name) for o in spec.options}
        tiles = plan(whole.images.shape[2:], tile, overlap)
        parts = []
        for index in tiles_to_run(tiles, whole.masks[0] if pass_through else None):
            rows, cols, _ = tiles[index]
            ref = None if whole.references is None else whole.references[0][(slice(None), *scaled(rows, cols, f))]
            parts.append((index, prepare(whole.images[0][:, rows, cols], whole.masks[0][:, rows, cols],
                                         task=sub_task, reference=ref, channel_axis=0, config=cfg,
                                         keep_observed=whole.keep_observed, validate=validate,
                                         classical=classical, threads=threads,
                                         operator=op if spec.name == "custom" else None, **options)))
        # a tile is already in [0, 1] units: its PSNRs count the whole image's range as the peak
        parts = [(index, replace(part, psnr_peak=whole.psnr_peak)) for index, part in parts]
        return cls(whole, tile, overlap, tiles, parts)

    def estimate(self, measure: bool = True) -> timing.Estimate:
        """How long the tiles that run take here (:meth:`Problem.estimate` of each; tiles of one
        size share their calibration, and their classical answers are kept for the run)."""
        if not self.parts:
            return replace(self.whole.estimate(measure=False), iterations=0, total_s=0.0, runs=0)
        return timing.combine([part.estimate(measure) for _, part in self.parts])

    def restore(self, callback=None, stop=None, client=None, checkpoint_dir=None,
                checkpoint_every_s: float = 300.0) -> "RestoreResult":
        """Run the tiles (see :func:`restore_tiled`) and blend them."""
        store = (PartStore(checkpoint_dir, self.fingerprint(), checkpoint_every_s, kind="tile")
                 if checkpoint_dir is not None else None)
        for kind, index, payload in self.solve(stop=stop, store=store, client=client):
            if kind == "event" and callback is not None:
                callback(payload, index)
        return self.result()

    def fingerprint(self) -> str:
        """Of the whole problem and the tiling (a store of other tiles is refused)."""
        first = self.parts[0][1] if self.parts else self.whole
        return self.whole.fingerprint(self.tile, self.overlap, first.validate, first.classical)

    def solve(self, stop=None, store=None, client=None):
        """The tiles that run, here in turn or on a Dask ``client`` at once (see
        :func:`src_core.parts.solve_parts`); answers are kept for :meth:`result`."""
        threads = 1 if client is not None and self.whole.threads is not None else None
        parts = [(i, replace(part, threads=threads) if threads else part) for i, part in self.parts]
        for kind, index, payload in solve_parts(parts, stop=stop, store=store, client=client,
                                                notes=self.whole.notes, what="tile"):
            if kind in ("answer", "loaded"):
                self.answers[index] = payload  # (answer, history, classical answer or None)
            self.stopped = self.stopped or kind == "stopped" or (
                kind == "answer" and _cut_short(payload[1], self.whole.config))
            yield kind, index, payload

    def span(self, index: int) -> tuple[slice, slice]:
        """Where tile ``index`` lies in the answer (rows, columns; super-resolution's are larger)."""
        from .tiles import scaled

        rows, cols, _ = self.tiles[index]
        return scaled(rows, cols, self.whole.operator.factor)

    def blend(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The blended answer and classical answer, (1, C, H, W) in [0, 1]: tiles that ran give
        theirs, the others (and tiles a stop left out) the input, each weighted by its
        raised-cosine weight.  Adds the tiling and, with a reference, the PSNRs to the notes."""
        whole, f = self.whole, self.whole.operator.factor
        c, h, w = whole.images.shape[1:]
        acc = np.zeros((c, h * f, w * f))
        acc_classical = np.zeros_like(acc)  # the classical answer, tiled and blended alike
        weight = np.zeros((h * f, w * f))
        with_classical = bool(self.answers) and all(a[2] is not None for a in self.answers.values())
        for index, (rows, cols, wt) in enumerate(self.tiles):
            out_rows, out_cols = self.span(index)
            if index in self.answers:
                answer = np.asarray(self.answers[index][0], dtype=np.float64)
                classical_part = self.answers[index][2] if with_classical else None
            else:
                answer = classical_part = _enlarge(whole.images[0][:, rows, cols], f)
            wt = _enlarge(wt, f)
            acc[:, out_rows, out_cols] += wt * answer
            if with_classical:
                acc_classical[:, out_rows, out_cols] += wt * classical_part
            weight[out_rows, out_cols] += wt
        final = (acc / weight).astype(np.float32)[None]
        classical_final = (acc_classical / weight).astype(np.float32)[None] if with_classical else None
        ran = sorted(self.answers)
        whole.notes.append(f"tiled: {len(self.tiles)} tile(s) of {self.tile} px with {self.overlap} px overlap, "
                           f"blended with raised-cosine weights; {len(ran)} ran "
                           f"({'all' if len(ran) == len(self.tiles) else ran})")
        if whole.references is not None:
            ref = whole.references[0]
            versus = "" if classical_final is None else (
                f", the {self.answers[ran[0]][1].summary.get('classical_method')} answer tiled alike "
                f"{psnr_ssim(classical_final[0], ref, with_ssim=False, peak=whole.psnr_peak)[0]:.2f} dB")
            whole.notes.append(f"PSNR of the whole tiled answer: "
                               f"{psnr_ssim(final[0], ref, with_ssim=False, peak=whole.psnr_peak)[0]:.2f} dB"
                               + versus)
        return final, classical_final

    def result(self) -> RestoreResult:
        """The blended answer in the user's form (see :meth:`blend`)."""
        whole = self.whole
        final, classical_final = self.blend()
        histories = [self.answers[i][1] for i in sorted(self.answers)]
        return RestoreResult(whole.to_user(final), whole.corrupted(), whole.masks, histories, whole.config,
                             whole.task, list(whole.notes),
                             None if classical_final is None else whole.to_user(classical_final),
                             whole.keep_observed, 0.0, self.stopped)
