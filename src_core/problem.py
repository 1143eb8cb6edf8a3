"""A restoration problem in engine form, and its answer in the user's.

:func:`src_core.preparation.prepare` builds a :class:`Problem`: the checked
images, masks and settings, one (C, H, W) slice at a time.  It hands out one
run per slice, turns each run's last event into the slice's answer (the
blend with the classical answer, the observed pixels kept, the summary), and
converts answers back to the user's layout, dtype and range
(:class:`RestoreResult`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from .checkpoint import fingerprint
from .classical import anisotropic, blur_volume, classical_answer, classical_volume, volume_method
from .config import RunConfig
from .engine import DIPRun, Finished, History, psnr_from_mse, psnr_ssim
from .errors import DIPError
from .fidelity import MSE, Fidelity
from .imaging import Layout, Scaling
from .operators import Identity, Operator, fingerprint_terms
from .parts import solve_parts
from . import timing


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
    budget: object = None   # the src_core.budget.Fitted that chose the count, or None (given)
    warnings: list = field(default_factory=list)  # the notes a user must see (bad pixels, no validation)
    #: "z": the slices are planes of one volume, so the classical answer is 3D (``volumetric``);
    #: "t" or None: independent slices (a time-lapse, a batch)
    stack: str | None = None
    spacing: tuple | None = None        # the volume's voxel spacing (z, y, x), for the 3D answer
    _classical_cache: dict = field(default_factory=dict, repr=False)
    _volume: dict = field(default_factory=dict, repr=False)  # the 3D answer's chosen spacing

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

    @property
    def volumetric(self) -> bool:
        """The classical answer is computed over the whole z-stack at once (3D biharmonic, with the
        voxel spacing where the held-out voxels prefer it; Richardson-Lucy with a 3D PSF), since
        its planes share structure; a lazy stack, read a slice at a time, and the methods with
        no 3D form stay per slice."""
        return (self.stack == "z" and self.slices > 1 and volume_method(self.classical, self.operator)
                and isinstance(self.images, np.ndarray))

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
        return enlarge(self.images[index], self.operator.factor)

    def fitted_mask(self, index: int) -> np.ndarray:
        mask = self.masks[index]
        return mask if self.held_out is None else mask & ~self.held_out[index]

    def run(self, index: int = 0, stop=None, checkpoint=None, start: dict | None = None) -> DIPRun:
        """Slice ``index``'s run; ``start``: a neighbour's final weights (``config.warm_start``),
        from which it runs that share of the iterations."""
        ref = None if self.references is None else self.references[index]
        mask = self.fitted_mask(index)
        if not mask.any():
            raise DIPError(f"slice {index} has no observed pixel; nothing to fit there.")
        held = None if self.held_out is None else self.held_out[index]
        return DIPRun(self.images[index], mask, self.warm_config() if start is not None else self.config, ref,
                      validation=held, keep_observed=self.keep_observed, stop=stop, threads=self.threads,
                      checkpoint=checkpoint, operator=self.operator, psnr_peak=self.psnr_peak,
                      fidelity=self.fidelity, start=start)

    def warm_config(self) -> RunConfig:
        """The settings of a warm-started slice: ``warm_start`` times the iterations."""
        return self.config.replace(iterations=self.config.warm_iterations())

    def part(self, index: int, threads: int | None = None) -> "Problem":
        """Slice ``index`` alone, as a one-slice problem (views of in-memory arrays; a lazy
        stack's slice is read now): run on its own, here or on a cluster, it gives that
        slice's answer exactly."""
        cut = slice(index, index + 1)
        seen = None
        if self.volumetric:  # the part gets its plane of the 3D answers: it cannot make them alone
            self.classical_seconds(index)
            seen = self._partner_seen()
        return replace(self, images=self.images[cut], masks=self.masks[cut],
                       _volume={} if seen is None else {"seen": seen[cut]},
                       references=None if self.references is None else self.references[cut],
                       held_out=None if self.held_out is None else self.held_out[cut],
                       notes=list(self.notes), threads=self.threads if threads is None else threads,
                       _classical_cache={(0, fitted): answer for (i, fitted), answer
                                         in self._classical_cache.items() if i == index})

    def fingerprint(self, *extra) -> str:
        """Of everything that decides the answer (the data, the settings, the operator)."""
        volume = ("z", self.spacing) if self.stack == "z" else ()  # a part of a volume too
        return fingerprint(self.images, self.masks, self.held_out, self.references, self.config.to_json(),
                           self.keep_observed, self.classical, self.validate,
                           *fingerprint_terms(self.operator), *volume, *extra)

    def solve(self, stop=None, store=None, client=None, start: dict | None = None):
        """Restore the slices: the one slice loop of the API, the CLI and the widget.

        Here in order, or on a Dask ``client`` all at once (each slice one task;
        a CPU run there takes one thread a task).  Yields what
        :func:`src_core.parts.solve_parts` yields; slice i's classical answer
        is kept once it ran.  Each slice is made (a lazy stack's read) only
        when its turn comes.  ``start``: the first slice starts from these weights (a
        ``Finished.weights`` of the same network: napari's live healing passes the last
        stroke's run), the later ones as ``config.warm_start`` says.
        """
        threads = 1 if client is not None and self.threads is not None else None
        parts = [(i, partial(self.part, i, threads)) for i in range(self.slices)]
        for kind, index, payload in solve_parts(parts, stop=stop, store=store, client=client, notes=self.notes,
                                                warm=True, start=start):
            if kind in ("answer", "loaded") and payload.classical is not None:
                self._classical_cache[(index, False)] = (payload.classical,
                                                         payload.history.summary.get("classical_seconds", 0.0))
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
        if key not in self._classical_cache and self.volumetric:
            self._classical_volume(fitted_only)
        if key not in self._classical_cache:
            mask = self.fitted_mask(index) if fitted_only else self.masks[index]
            t0 = time.perf_counter()
            answer = classical_answer(self.classical, self.images[index], mask, self.operator)
            self._classical_cache[key] = (answer, time.perf_counter() - t0)
        return self._classical_cache[key]

    def _classical_volume(self, fitted_only: bool) -> None:
        """Every plane's 3D classical answer into the cache, each with its share of the seconds.

        The voxel spacing a file states is one guess at how the volume's smoothness compares
        across planes and within them; the voxel grid (unit spacing) is another, and on the
        anisotropic phantom of ``benchmarks/zstack.py`` the grid filled better (its structure,
        like a widefield PSF, is longer in z). With held-out voxels both are tried on the
        fitted ones and the one that predicts the held-out voxels better is kept (noted);
        without, the grid."""
        t0 = time.perf_counter()
        grid = (1.0, 1.0, 1.0)
        spaced = self.classical == "biharmonic" and anisotropic(self.spacing)  # RL's PSF is in voxels
        options = [grid] + ([self.spacing] if spaced else [])
        fitted = self.masks if self.held_out is None else self.masks & ~self.held_out  # every fitted_mask
        if "spacing" not in self._volume:
            if len(options) == 1 or self.held_out is None:
                self._volume["spacing"] = grid
            else:
                truth = self.images[self.held_out]
                tried = {sp: classical_volume(self.classical, self.images, fitted, sp, self.operator)
                         for sp in options}
                scores = {sp: _psnr(answer[self.held_out], truth, self.psnr_peak) or 0.0
                          for sp, answer in tried.items()}
                best = max(options, key=lambda sp: scores[sp])
                self._volume["spacing"] = best
                self._volume["fitted"] = tried[best]
                self.notes.append(f"classical 3D: {self._spacing_name(best)} kept (held-out PSNR "
                                  + ", ".join(f"{self._spacing_name(sp)} {scores[sp]:.2f} dB" for sp in options) + ")")
        spacing = self._volume["spacing"]
        if fitted_only and "fitted" in self._volume:
            volume = self._volume.pop("fitted")
        else:
            volume = classical_volume(self.classical, self.images, fitted if fitted_only else self.masks, spacing,
                                      self.operator)
        seconds = (time.perf_counter() - t0) / self.slices  # each plane's share
        for i in range(self.slices):
            self._classical_cache[(i, fitted_only)] = (volume[i], seconds)

    def _partner_seen(self) -> np.ndarray | None:
        """What the 3D partner from the fitted voxels predicts the whole stack recorded (its 3D blur:
        Richardson-Lucy with a 3D PSF), once for every plane's judge (a part holds its plane of it);
        None where the partner is judged through the slice's own operator."""
        if "seen" not in self._volume and self.blends and self.volumetric and self.classical == "richardson-lucy":
            fitted = np.stack([self.classical_answer(i, fitted_only=True)[0] for i in range(self.slices)])
            self._volume["seen"] = blur_volume(fitted, self.operator.volume)
        return self._volume.get("seen")

    @staticmethod
    def _spacing_name(spacing) -> str:
        return "spacing z {:g}, y {:g}, x {:g}".format(*spacing) if anisotropic(spacing) else "the voxel grid"

    def answer(self, index: int, finished: Finished) -> np.ndarray:
        """The final (C, H, W) answer of a slice from its run's last event.

        Blends with the classical fill where that was asked for, puts the
        observed pixels back, and writes ``history.summary``: the answer's,
        DIP's, the classical method's and the corrupted input's PSNR (with a
        reference) and their validation PSNR on the held-out pixels.
        """
        history = finished.history
        dip = np.asarray(finished.output, dtype=np.float32)
        summary = {"keep_observed": self.keep_observed, "classical_method": self.classical,
                   "answer_iteration": history.answer_iteration, "blend_alpha": None}
        classical = None
        if self.classical is not None:
            classical, summary["classical_seconds"] = self.classical_answer(index)
        answer = dip
        if self.held_out is not None:
            alpha = self._judge_on_held_out(index, dip, summary)
            if alpha is not None:
                answer = alpha * dip + (1 - alpha) * classical
        answer = np.clip(self.kept(index, answer), 0.0, 1.0).astype(np.float32)
        if self.references is not None:
            self._judge_on_reference(index, answer, dip, classical, history, summary)
        if finished.members is not None:
            summary["restarts"] = len(finished.members)
            if self.references is not None:
                summary["psnr_dip_members"] = [psnr_ssim(self.kept(index, m), self.references[index],
                                                         with_ssim=False, peak=self.psnr_peak)[0]
                                               for m in finished.members]
        verdict = classical_only_verdict(summary, history)
        if verdict is not None:
            summary["verdict"] = verdict
        history.summary = summary
        return answer

    def spread(self, index: int, finished: Finished) -> np.ndarray | None:
        """How much the restarts disagree, (C, H, W) in [0, 1] units: their standard deviation,
        zero on the pixels the answer keeps from the observation; None for one run.  It is
        DIP's disagreement: the blended answer varies by ``blend_alpha`` times it."""
        spread = finished.spread
        if spread is None:
            return None
        return np.where(self.masks[index], 0.0, spread).astype(np.float32) if self.keep_observed else spread

    def stacked_spread(self, spreads: dict) -> np.ndarray | None:
        """The slices' spreads (index -> (C, H, W)) as one (N, C, H, W) array, NaN (unknown) on a
        slice not run; None without restarts."""
        if not spreads:
            return None
        stack = np.full((self.slices, *self.operator.output_shape(self.images.shape[1:])), np.nan, np.float32)
        for index, spread in spreads.items():
            stack[index] = spread
        return stack

    def spread_to_user(self, nchw: np.ndarray) -> np.ndarray:
        """A spread (N, C, H, W) in [0, 1] units -> the user's layout, as float32 in the image's
        units (a difference of values: scaled, not offset, and never rounded to the dtype)."""
        return (self._layout_of(nchw).from_nchw(nchw).astype(np.float64) * self.scaling.scale).astype(np.float32)

    def kept(self, index: int, chw: np.ndarray) -> np.ndarray:
        """``chw`` with slice ``index``'s observed pixels put back, if the answer keeps them."""
        return np.where(self.masks[index], self.images[index], chw) if self.keep_observed else chw

    def _judge_on_held_out(self, index: int, dip: np.ndarray, summary: dict) -> float | None:
        """Validation PSNRs on the held-out pixels, each answer judged by what it predicts there
        (through the operator); the blend's weight when the problem blends (None otherwise)."""
        held = self.held_out[index]
        truth = self.images[index][held]
        summary["held_out_pixels"] = int(held.sum())
        fitted_only = self.classical_answer(index, fitted_only=True)[0] if self.blends else None
        volume_seen = self._partner_seen()
        if volume_seen is not None:
            # a 3D PSF blurs the neighbouring planes into this one: the partner is judged by what its
            # whole volume predicts here, and DIP as that volume with this plane replaced by DIP's
            classical_seen = volume_seen[index][held]
            dip_seen = (volume_seen[index] + self.observe(dip - fitted_only))[held]
        else:
            dip_seen = self.observe(dip)[held]
        summary["val_psnr_dip"] = _psnr(dip_seen, truth, self.psnr_peak)
        if not self.blends:
            return None
        if volume_seen is None:
            classical_seen = self.observe(fitted_only)[held]
        alpha = blend_weight(dip_seen, classical_seen, truth)
        summary["blend_alpha"] = alpha
        summary["val_psnr_classical"] = _psnr(classical_seen, truth, self.psnr_peak)
        summary["val_psnr_answer"] = _psnr(alpha * dip_seen + (1 - alpha) * classical_seen, truth,
                                           self.psnr_peak)
        return alpha

    def _judge_on_reference(self, index: int, answer, dip, classical, history: History, summary: dict) -> None:
        """PSNRs against the reference: the answer's, DIP's alone, the observation's, the classical's."""
        ref, peak = self.references[index], self.psnr_peak

        def psnr(x):
            return psnr_ssim(x, ref, with_ssim=False, peak=peak)[0]

        summary["psnr_answer"] = psnr(answer)
        summary["psnr_dip"] = psnr(self.kept(index, dip))
        if self.operator.factor == 1:  # the observation itself, as an answer
            summary["psnr_corrupted"] = psnr(self.images[index] * self.masks[index])
        if classical is not None:
            summary["psnr_classical"] = psnr(classical)
            summary["iterations_to_classical"] = _first_reaching(history, summary["psnr_classical"])

    def corrupted(self) -> np.ndarray:
        """The observed image (missing pixels at the low end), in the user's form."""
        return self.to_user(self.images * self.masks)

    def to_user(self, nchw: np.ndarray) -> np.ndarray:
        """(N, C, H, W) in [0, 1] -> the user's layout, dtype and range (for inputs or answers)."""
        return self.scaling.from_unit(self._layout_of(nchw).from_nchw(nchw))

    def _layout_of(self, nchw: np.ndarray) -> Layout:
        """The input's layout for arrays of its size, the answer's for larger ones (super-resolution)."""
        return self.layout if nchw.shape[-2:] == self.images.shape[-2:] else self.output_layout

    def slice_to_user_float(self, chw: np.ndarray) -> np.ndarray:
        """One engine slice as (H, W) or (H, W, C) float in [0, 1], for previews."""
        chw = np.asarray(chw)
        if self.layout.channel_axis is None:
            return chw[0]
        return np.moveaxis(chw, 0, -1)


#: a blend weight below this is "the answer is the classical one": DIP added nothing to see
CLASSICAL_ONLY_WEIGHT = 0.05


def classical_only_verdict(summary: dict, history: History) -> str | None:
    """Plain words for an answer the blend took (almost) wholly from the classical method: what
    DIP alone reached, and how many iterations it would need at its held-out curve's rate to
    catch up (or that it no longer gains); None when DIP's weight is larger or there is no blend."""
    alpha = summary.get("blend_alpha")
    method = summary.get("classical_method")
    dip_val, classical_val = summary.get("val_psnr_dip"), summary.get("val_psnr_classical")
    if alpha is None or alpha >= CLASSICAL_ONLY_WEIGHT or dip_val is None or classical_val is None:
        return None
    if summary.get("psnr_dip") is not None and summary.get("psnr_classical") is not None:
        scores = f"DIP alone reached {summary['psnr_dip']:.2f} dB, {method} {summary['psnr_classical']:.2f} dB"
    else:
        scores = f"DIP alone reached {dip_val:.2f} dB on the held-out pixels, {method} {classical_val:.2f} dB"
    text = f"the answer is the {method} one (DIP's weight {alpha:.2f}): {scores}"
    needed, why = iterations_to_reach(history, classical_val)
    done = history.timings.get("iterations") or (history.iterations[-1] if history.iterations else 0)
    if why == "rate":
        return text + f"; at its rate DIP would need about {needed:,} iterations in all (this run: {done:,})."
    return text + {
        "too far": ("; DIP was still improving, but at its rate it would need more than 100 times this "
                    "run's iterations to catch up."),
        "flat": "; DIP's fit had stopped gaining, so more iterations are unlikely to help here.",
        "too short": f"; {done:,} iterations are too few to tell how many more DIP would need.",
        "reached": "; on the held-out pixels DIP had caught up by the end: the blend found nothing to add.",
    }[why]


def iterations_to_reach(history: History, level: float, most_times: float = 100.0) -> tuple[int | None, str]:
    """(the iteration count at which the held-out PSNR would reach ``level``, extrapolated from
    its last half as linear in log(iterations), and "rate"), or (None, why not): "too short"
    (under 4 reports), "flat" (not rising), "too far" (more than ``most_times`` the iterations
    run: an extrapolation that far says nothing); (the last count, "reached") where it has."""
    pairs = [(it, v) for it, v in zip(history.iterations, history.val_psnr)
             if it > 0 and v is not None and math.isfinite(v)]
    if len(pairs) < 4:
        return None, "too short"
    last_it, last_v = pairs[-1]
    if last_v >= level:
        return last_it, "reached"
    tail = [(math.log(it), v) for it, v in pairs if it >= last_it / 2]
    if len(tail) < 3:
        return None, "too short"
    slope = float(np.polyfit([x for x, _ in tail], [v for _, v in tail], 1)[0])  # dB per e-fold
    if slope <= 0:
        return None, "flat"
    factor = math.exp((level - last_v) / slope)
    if factor > most_times:
        return None, "too far"
    return int(math.ceil(last_it * factor / 100.0) * 100), "rate"


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


def cut_short(history: History, config: RunConfig) -> bool:
    """A stop request ended this run before its iterations (its answer is partial)."""
    return bool(history.timings.get("stopped_by_user")) and history.timings.get("iterations", 0) < config.iterations


def enlarge(chw: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel repeated ``factor`` times along Y and X (the input at an SR answer's size)."""
    return chw if factor == 1 else np.repeat(np.repeat(chw, factor, axis=-2), factor, axis=-1)


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
    #: with restarts: their per-pixel standard deviation, the answer's shape, float32 in the
    #: image's units (zero on kept pixels, NaN on slices not run); None for one run
    spread: np.ndarray | None = None

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
