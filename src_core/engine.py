"""The optimisation loop, as a generator of progress events.

One loop serves the napari widget, the CLI and notebooks: each drives a
:class:`DIPRun` (one network) or a :class:`DIPBatch` (several independent
networks optimised in one pass) and decides what to do with the events.

The hot loop never waits for the device: the loss of every iteration is
written into a device tensor, and the host reads values only every
``report_every`` (metrics), ``guard_every`` (destabilisation guard) and
``snapshot_every`` iterations.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import Checkpoint, fingerprint
from .config import RunConfig
from .devices import free_device_memory, resolve_device
from .errors import DIPError
from .imaging import check_reference
from .operators import Identity, Operator, check_maps, fingerprint_terms, padded_grid, split_mask
from .operators import psnr_from_mse as _psnr_from_mse
from .network import SkipNet, build_network
from . import speed


# ----------------------------------------------------------------------------- events

@dataclass
class Progress:
    """Metrics every ``report_every`` iterations; ``output`` only on snapshot iterations.

    ``fit_psnr`` compares the output with the observed pixels only (the
    quantity a user without ground truth can see).  ``psnr``/``ssim`` compare
    with the clean reference when one was given (scikit-image, data_range 1,
    output clipped to [0, 1]).  ``output`` is (C, H, W) float32 in [0, 1].
    In a :class:`DIPBatch` every metric is a list (one per member) and
    ``output`` is (K, C, H, W).
    """

    iteration: int
    total: int
    loss: float
    fit_psnr: float
    psnr: float | None
    ssim: float | None
    elapsed: float
    output: np.ndarray | None = None
    kind: str = "progress"

    @property
    def iterations_per_second(self) -> float:
        return self.iteration / self.elapsed if self.elapsed > 0 else float("nan")


@dataclass
class Recovery:
    """The guard restored the last good weights after the fit PSNR fell sharply."""

    iteration: int
    fit_psnr: float
    previous_fit_psnr: float
    member: int = 0
    kind: str = "recovery"

    @property
    def message(self) -> str:
        return (f"iteration {self.iteration}: fit PSNR fell {self.previous_fit_psnr:.2f} -> "
                f"{self.fit_psnr:.2f} dB; restored the last good weights")


@dataclass
class EarlyStop:
    """ES-WMV stopped the run; the answer is the output at ``best_iteration``."""

    iteration: int
    best_iteration: int
    kind: str = "early_stop"

    @property
    def message(self) -> str:
        return (f"early stop (ES-WMV) at iteration {self.iteration}; "
                f"answer from iteration {self.best_iteration}")


#: the held-out gain (dB) over a run's last quarter above which the run is called unfinished
UNDERFIT_DB = 0.1


@dataclass
class History:
    """Everything a run measured, ready for JSON."""

    iterations: list = field(default_factory=list)
    fit_psnr: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    val_psnr: list = field(default_factory=list)
    answer_iteration: int | None = None
    recoveries: list = field(default_factory=list)
    early_stop: dict | None = None
    timings: dict = field(default_factory=dict)
    device: str = ""
    fast_path: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)   # the final answer against the alternatives (api)
    part: int | None = None   # which slice (or tile) of a run over many this history is of

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def still_improving(self) -> float | None:
        """The dB the held-out fit gained over the run's last quarter when it was still rising at
        the end (the answer came from the last reports): the run stopped before the fit was done,
        and more iterations would most likely give a better answer.  None otherwise, or when
        nothing was held out (the fit on the pixels fitted always rises)."""
        pairs = [(it, v) for it, v in zip(self.iterations, self.val_psnr) if v is not None and math.isfinite(v)]
        if len(pairs) < 8:
            return None
        last = pairs[-1][0]
        quarter = [v for it, v in pairs if it >= 0.75 * last]
        best_it = max(pairs, key=lambda p: p[1])[0]
        gain = max(quarter) - quarter[0]
        return gain if best_it >= 0.9 * last and gain >= UNDERFIT_DB else None

    @property
    def final_psnr(self) -> float | None:
        """PSNR of the answer returned (the last report's when the API made no summary)."""
        if self.summary.get("psnr_answer") is not None:
            return self.summary["psnr_answer"]
        return self.psnr[-1] if self.psnr and self.psnr[-1] is not None else None


@dataclass
class Finished:
    """Last event: the answer (C, H, W) float32 in [0, 1] and the run's history."""

    output: np.ndarray
    history: History
    completed: int
    stopped: bool = False
    kind: str = "finished"


@dataclass
class BatchFinished:
    """Last event of a DIPBatch: one answer and history per member, and their average."""

    outputs: np.ndarray              # (K, C, H, W)
    histories: list
    completed: int
    average: np.ndarray | None       # (C, H, W) mean of the members' answers (restarts)
    average_psnr: float | None
    stopped: bool = False
    kind: str = "finished"


# ----------------------------------------------------------------------------- input code

def make_input(kind: str, channels: int, height: int, width: int, scale: float,
               generator: torch.Generator) -> torch.Tensor:
    """The fixed network input z, (1, channels, H, W) on the CPU."""
    if kind == "meshgrid":
        ys = torch.linspace(0, 1, height)
        xs = torch.linspace(0, 1, width)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy])[None].float()
    z = torch.empty(1, channels, height, width)
    if kind == "uniform":
        z.uniform_(generator=generator)
    else:
        z.normal_(generator=generator)
    return z * scale


# ----------------------------------------------------------------------------- metrics

def _fit_psnrs(operator: Operator, losses, observed, peak: float = 1.0) -> list[float]:
    """Each member's fit PSNR (:meth:`Operator.fit_psnr`) with ``peak`` as its peak (see
    ``DIPBatch``'s ``psnr_peak``): the same figure for the reports and for the guard."""
    shift = 20.0 * math.log10(peak)
    return [operator.fit_psnr(v, o) + shift for v, o in zip(losses, observed)]


def psnr_ssim(estimate: np.ndarray, reference: np.ndarray, with_ssim: bool = True, peak: float = 1.0):
    """PSNR and SSIM of a (C, H, W) estimate, clipped to [0, 1], with data_range ``peak`` (1: the
    whole of [0, 1]; less where the data were scaled with headroom, see ``DIPBatch``)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    est = np.clip(estimate, 0.0, 1.0)
    psnr = float(peak_signal_noise_ratio(reference, est, data_range=peak))
    ssim = None
    if with_ssim and min(est.shape[-2:]) >= 7:
        ssim = float(structural_similarity(reference, est, data_range=peak, channel_axis=0))
    return psnr, ssim



# ----------------------------------------------------------------------------- the members

#: torch's CPU generator is one for the process: a network is initialised from it (seeded, then
#: put back), so two runs building theirs at once in two threads (a widget run beside the panel's
#: timing calibration, Dask's threads) would draw each other's numbers: one at a time
_GLOBAL_RNG = threading.Lock()

class _Members:
    """K independent skip networks behind one call.

    K = 1 is a plain module call.  K > 1 stacks the networks' weights
    (torch.func.stack_module_state), so one optimiser and one guard serve
    them all, and runs them either as one vmapped call (grouped
    convolutions: one pass, for GPUs) or member by member within the step
    ("loop": on the CPU, where oneDNN's grouped convolutions measured 0.39x
    the throughput of separate runs).  Each network is built with its own
    seed exactly as a single run would be, so a batch reproduces sequential
    runs.
    """

    def __init__(self, config: RunConfig, channels: int, seeds: list[int], device, memory_format,
                 strategy: str = "vmap"):
        nets = []
        for seed in seeds:
            with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                nets.append(build_network(config.network, output_channels=channels, memory_format=memory_format))
        self.count = len(nets)
        if self.count == 1:
            self.module = nets[0].to(device=device, memory_format=memory_format)
            self.params = list(self.module.parameters())
            self.buffers = None
        else:
            from torch.func import stack_module_state

            params, buffers = stack_module_state([n.to(device) for n in nets])
            self.names = list(params)
            self.params = [params[n] for n in self.names]
            self.buffers = buffers
            self.module = copy.deepcopy(nets[0]).to("meta" if strategy == "vmap" else device)
        if self.count == 1:
            self.forward = self._forward_single
        else:
            self.forward = self._forward_vmap if strategy == "vmap" else self._forward_loop

    def _forward_single(self, z):
        return self.module(z)

    def _forward_vmap(self, z):
        from torch.func import functional_call, vmap

        def one(params, buffers, x):
            return functional_call(self.module, (params, buffers), (x[None],))[0]

        params = dict(zip(self.names, self.params))
        return vmap(one)(params, self.buffers, z)

    def _forward_loop(self, z):
        from torch.func import functional_call

        outs = []
        for k in range(self.count):
            params = {n: p[k] for n, p in zip(self.names, self.params)}
            buffers = {n: b[k] for n, b in self.buffers.items()}
            outs.append(functional_call(self.module, (params, buffers), (z[k:k + 1],)))
        return torch.cat(outs)

    def named_buffers(self) -> dict:
        """The BatchNorm buffers by name (stacked over members when there are several)."""
        return dict(self.module.named_buffers()) if self.count == 1 else dict(self.buffers or {})

    def member_params(self, k: int) -> list[torch.Tensor]:
        return self.params if self.count == 1 else [p[k] for p in self.params]


# ----------------------------------------------------------------------------- the loop

def _hand_over(event, allocator):
    """Yield an event with the allocator paused while the consumer holds control."""
    with allocator.paused():
        yield event


class DIPBatch:
    """K independent Deep Image Prior fits optimised together.

    ``images``: (K, C, H, W) float in [0, 1] (several images of one size, or
    the same image K times for restarts); ``masks``: bool, True = observed,
    (K, C|1, H, W) or broadcastable; ``references``: optional clean images;
    ``seeds``: one per member (default ``config.seed + k``).  Events carry
    one value per member; the final event also holds the average of the
    members' answers (the paper reports that averaging restarts raises PSNR).

    Adam only; early stopping is per run (use DIPRun).

    ``validation``: observed pixels held out of the loss (True = held out,
    shaped like ``masks``, disjoint from them).  Their PSNR, recorded at
    every report, estimates the answer's quality without ground truth; the
    answer is the estimate at the best validation report, and
    ``config.early_stop`` stops when it has not improved for
    ``es_patience`` iterations (instead of ES-WMV).  ``keep_observed``: the
    answer equals the image wherever it was observed (mask or validation),
    so only the missing pixels come from the network.  ``psnr_peak``: the range every PSNR
    counts as its peak (1: all of [0, 1]; a problem scaled with headroom above its data, as
    deconvolution is, passes its data's share, so its PSNRs mean what they mean elsewhere).
    """

    def __init__(self, images, masks=None, config: RunConfig | None = None, references=None,
                 seeds: list[int] | None = None, strategy: str = "auto", validation=None,
                 keep_observed: bool = False, stop: threading.Event | None = None,
                 threads: int | None = None, checkpoint: Checkpoint | None = None,
                 operator: Operator | None = None, psnr_peak: float = 1.0):
        self.config = (config or RunConfig()).validate()
        if isinstance(psnr_peak, bool) or not isinstance(psnr_peak, (int, float)) or not 0 < psnr_peak <= 1:
            raise DIPError(f"psnr_peak must be in (0, 1] (got {psnr_peak!r}).")
        self.psnr_peak = float(psnr_peak)
        self.operator, operator_mask = split_mask(operator)
        if operator_mask is not None:
            if masks is not None:
                raise DIPError("give the mask once: either as masks or inside the operator (Mask).")
            masks = operator_mask
        self.checkpoint = checkpoint
        if checkpoint is not None and self.config.optimizer != "adam":
            raise DIPError("checkpoints are made for Adam runs; use optimizer='adam' or no checkpoint.")
        self.device = resolve_device(self.config.device)
        self.threads = speed.resolve_threads(threads, self.device)
        images = np.asarray(images)
        if images.ndim != 4:
            raise DIPError(f"a batch needs (K, C, H, W) images (got shape {images.shape}).")
        k = images.shape[0]
        if k == 0:
            raise DIPError("a batch needs at least one image (got K=0).")
        self.images = [_check_chw(im, "image") for im in images]
        self.operator.check(self.images[0].shape)
        self.output_shape = self.operator.output_shape(self.images[0].shape)
        if masks is None:
            masks = [None] * k
        else:
            masks = np.asarray(masks)
            if masks.ndim == 4 and len(masks) != k:
                raise DIPError(f"{len(masks)} masks for {k} images; give one mask per image, or one "
                               "(H, W) mask for all.")
            masks = list(masks) if masks.ndim == 4 else [masks] * k
        self.masks = [_check_mask(m, im.shape) for m, im in zip(masks, self.images)]
        self.validation = None
        if validation is not None:
            validation = np.asarray(validation)
            if validation.ndim == 4 and len(validation) != k:
                raise DIPError(f"{len(validation)} validation masks for {k} images; give one per image.")
            validation = list(validation) if validation.ndim == 4 else [validation] * k
            self.validation = [_check_mask(v, im.shape, "validation mask", may_be_empty=True) for v, im in
                               zip(validation, self.images)]
            if any((v & m).any() for v, m in zip(self.validation, self.masks)):
                raise DIPError("validation pixels must be held out of the mask (disjoint from it).")
        self.keep_observed = bool(keep_observed)
        if self.keep_observed and not self.operator.identity:
            raise DIPError(f"keep_observed needs observed pixels that are output pixels; with "
                           f"{self.operator!r} the observation is not, so leave keep_observed off.")
        if references is None:
            self.references = None
        else:
            refs = np.asarray(references)
            if refs.ndim == 3:
                refs = np.stack([refs] * k)
            if refs.ndim != 4 or len(refs) != k:
                raise DIPError(f"references of shape {refs.shape} for {k} images of shape "
                               f"{images.shape[1:]}; give one clean image per image.")
            self.references = [_check_chw(r, "reference") for r in refs]
            for r in self.references:
                check_reference(r.shape, self.output_shape)
        self.seeds = list(seeds) if seeds is not None else [self.config.seed + i for i in range(k)]
        if len(self.seeds) != k:
            raise DIPError(f"{len(self.seeds)} seeds for {k} images; give one seed per image.")
        if strategy not in ("auto", "vmap", "loop"):
            raise DIPError(f"strategy must be 'auto', 'vmap' or 'loop' (got {strategy!r}).")
        self.strategy = ("loop" if self.device.type == "cpu" else "vmap") if strategy == "auto" else strategy
        if k > 1 and self.config.optimizer != "adam":
            raise DIPError("batched runs use Adam; run L-BFGS one image at a time (DIPRun).")
        if k > 1 and self.config.early_stop:
            raise DIPError("early stopping decides per run; use DIPRun for early stopping.")
        c, h, w = self.output_shape
        self.config.network.check_fits(h, w)
        self.amp_dtype = speed.resolve_precision(self.config.precision, self.device)
        self.memory_format = speed.resolve_memory_format(self.config.memory_format, self.device,
                                                         self.amp_dtype)
        if self.config.optimizer == "lbfgs":  # torch's L-BFGS flattens gradients with view()
            self.memory_format = torch.contiguous_format
        compile_mode = speed.resolve_compile(self.config.compile, self.device)
        self.compile = compile_mode if k == 1 else False
        self.graph = speed.resolve_graph(self.config.compile, self.device, self.config.optimizer,
                                         self.amp_dtype)
        self.grid = padded_grid(self.images[0].shape[-2:], self.operator.factor, self.operator.margin,
                                2 ** self.config.network.scales)
        hp, wp = self.grid.output
        if self.output_shape[1:] != tuple(self.operator.factor * n for n in self.images[0].shape[-2:]):
            raise DIPError(f"{self.operator!r}.output_shape {self.output_shape} is not the observation "
                           f"{self.images[0].shape} enlarged by its factor ({self.operator.factor}); "
                           "a size-changing operator sets factor and keeps the default output_shape.")
        check_maps(self.operator, c, self.grid.output, self.grid.observation)
        wmv = self.config.early_stop and self.validation is None  # the window, its best, float64 sums and shift
        extra = ((1 if self.config.ema > 0 else 0) + (self.config.es_window + 7 if wmv else 0)
                 + (1 if self.config.guard else 0)
                 + (3 if self.validation is not None or self.keep_observed else 0))
        self.memory_needed = speed.check_memory(
            self.config.network, c, (hp, wp), self.amp_dtype, self.device, members=k, extra_images=extra)
        self.network: SkipNet | None = None
        self.completed = 0
        self._stop = stop if stop is not None else threading.Event()
        self._events = self._loop()

    # generator protocol -------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        return next(self._events)

    def close(self) -> None:
        """Stop now and free device memory, discarding the result; safe to call twice.

        From another thread while the run is computing, it asks the run to
        stop instead (a running generator cannot be closed from outside); the
        run then frees its memory when it ends.
        """
        try:
            self._events.close()
        except ValueError:  # "generator already executing": it runs in another thread
            self._stop.set()

    def request_stop(self) -> None:
        """Finish after the current iteration: the next events are a last Progress and a
        Finished holding the partial answer.  Safe to call from another thread."""
        self._stop.set()

    def run(self):
        """Run to the end and return the final event."""
        last = None
        for event in self:
            last = event
        return last

    @property
    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed: the problem, the settings, the seeds."""
        return fingerprint(self.images, self.masks, self.validation, self.references,
                           self.config.to_json(), self.seeds, self.keep_observed,
                           *fingerprint_terms(self.operator))

    @property
    def fast_path(self) -> dict:
        return {"precision": str(self.amp_dtype or torch.float32).replace("torch.", ""),
                "memory_format": "channels_last" if self.memory_format == torch.channels_last else "contiguous",
                "compile": self.compile, "cuda_graph": self.graph, "members": len(self.images),
                **({"batch_strategy": self.strategy} if len(self.images) > 1 else {})}

    # the loop -----------------------------------------------------------------
    def _loop(self):
        """Set up, then for each iteration: step, guard, optimise, track, report, stop?"""
        fit = _Fit(self)
        try:
            start = fit.resume(self.checkpoint) + 1
            with fit.process_settings():
                for it in range(start, self.config.iterations + 1):
                    fit.step(it)
                    yield from fit.guard(it)
                    fit.optimise()
                    fit.track(it)
                    yield from fit.report(it)
                    if fit.should_end(it):
                        yield from fit.last_report(it)
                        break
                yield fit.finish()
        finally:
            fit.release()

    @staticmethod
    def _padded_masks(masks, shape, crop) -> np.ndarray:
        """Per-member masks on the padded grid (the padding is neither observed nor held out)."""
        out = np.zeros(shape, dtype=bool)
        for i, m in enumerate(masks):
            out[i, :, crop[0], crop[1]] = np.broadcast_to(m, (shape[1], *m.shape[-2:]))
        return out

    def _note_fallback(self, histories, exc):
        note = f"torch.compile unavailable ({type(exc).__name__}: {str(exc)[:200]}); ran eager"
        for h in histories:
            h.notes.append(note)
            h.fast_path["compile"] = False

    def _progress(self, it, total, loss, observed, operator, estimate, to_host, t0, histories, snapshot,
                  record):
        cfg = self.config
        losses = loss.tolist()
        fits = _fit_psnrs(operator, losses, observed, self.psnr_peak)
        need_host = snapshot or self.references is not None
        host = to_host(estimate()) if need_host else None
        psnrs, ssims = [None] * len(losses), [None] * len(losses)
        if self.references is not None:
            scores = [(host[i], ref, cfg.compute_ssim) for i, ref in enumerate(self.references)]
            if len(scores) > 1:  # SSIM is ~25 ms a 512x512 member on the host while the device waits
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(min(len(scores), speed.usable_cores())) as pool:
                    scores = list(pool.map(lambda args: psnr_ssim(*args, peak=self.psnr_peak), scores))
            else:
                scores = [psnr_ssim(*scores[0], peak=self.psnr_peak)]
            psnrs, ssims = map(list, zip(*scores))
        held = self._held
        vals = held.check(it, estimate()) if held is not None and record else None
        elapsed = time.perf_counter() - t0
        if record:
            for i, (h, fit, p, s) in enumerate(zip(histories, fits, psnrs, ssims)):
                h.iterations.append(it)
                h.fit_psnr.append(fit)
                h.psnr.append(p)
                h.ssim.append(s)
                if vals is not None:
                    h.val_psnr.append(vals[i])
        output = np.clip(host, 0, 1) if snapshot else None
        return Progress(it, total, losses, fits, psnrs, ssims, elapsed, output)

    def _finished(self, outputs, histories, stopped):
        average = outputs.mean(axis=0) if len(outputs) > 1 else None
        average_psnr = None
        if average is not None and self.references is not None:
            average_psnr, _ = psnr_ssim(average, self.references[0], with_ssim=False, peak=self.psnr_peak)
        return BatchFinished(outputs, histories, self.completed, average, average_psnr, stopped)


class DIPRun(DIPBatch):
    """One Deep Image Prior optimisation, iterated as events.

    ``image``: (C, H, W) float in [0, 1], finite.  ``mask``: bool, True =
    observed, of shape (H, W), (1, H, W) or (C, H, W).  ``reference``: clean
    (C, H, W) image for true PSNR/SSIM, optional.

    Iterate to run; ``close()`` stops at once and frees device memory;
    ``request_stop()`` finishes after the current step with the partial
    answer.  The network is built lazily, on the first ``next()``, so
    construction only checks the input (and the memory it will need).

    >>> import numpy as np
    >>> from src_core import DIPRun, preset, bernoulli_mask
    >>> img = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    >>> cfg = preset("cpu", scales=2, down_channels=8, up_channels=8, iterations=4, report_every=2)
    >>> events = list(DIPRun(img, bernoulli_mask((32, 32), 0.5), cfg))
    >>> [e.kind for e in events]
    ['progress', 'progress', 'finished']
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray | None = None,
                 config: RunConfig | None = None, reference: np.ndarray | None = None,
                 validation: np.ndarray | None = None, keep_observed: bool = False,
                 stop: threading.Event | None = None, threads: int | None = None,
                 checkpoint: Checkpoint | None = None, operator: Operator | None = None,
                 psnr_peak: float = 1.0):
        image = _check_chw(image, "image")
        if mask is not None:
            mask = _check_mask(mask, image.shape)[None]
        if reference is not None:
            reference = _check_chw(reference, "reference")[None]
        config = (config or RunConfig()).validate()
        super().__init__(image[None], mask, config, reference, seeds=[config.seed],
                         validation=None if validation is None else np.asarray(validation)[None],
                         keep_observed=keep_observed, stop=stop, threads=threads, checkpoint=checkpoint,
                         operator=operator, psnr_peak=psnr_peak)

    def _progress(self, *args, **kwargs):
        p = super()._progress(*args, **kwargs)
        return Progress(p.iteration, p.total, p.loss[0], p.fit_psnr[0], p.psnr[0], p.ssim[0],
                        p.elapsed, None if p.output is None else p.output[0])

    def _finished(self, outputs, histories, stopped):
        return Finished(outputs[0], histories[0], self.completed, stopped)


class _Fit:
    """One run's device state and the named steps of its loop (``DIPBatch._loop`` drives them).

    Built on the first ``next()``: the grids, the network members, the input
    code and its noise, the observation and its mask, the optimiser, and the
    optional guard, running average, ES-WMV window and held-out pixels.
    """

    def __init__(self, run: "DIPBatch"):
        t_setup = time.perf_counter()
        self.run, self.cfg, self.dev = run, run.config, run.device
        self.k = len(run.images)
        self.operator = run.operator.to(run.device)
        self.members = run._members = _Members(run.config, run.output_shape[0], run.seeds, run.device,
                                               run.memory_format, run.strategy)
        if self.k == 1:
            run.network = self.members.module
        self.fmt = run.memory_format
        self._data(run)
        self._optimisation(run)
        self.current: dict = {}
        self.skip: list[int] = []
        self.stop_reason = None
        self.stalled = False
        self.allocator = speed.FreedMemoryReuse(run.device)
        self.histories[0].timings["setup_s"] = time.perf_counter() - t_setup
        self.t0 = time.perf_counter()

    def _data(self, run: "DIPBatch") -> None:
        """The input code and its noise streams, the observation and its masks on the device."""
        cfg, dev, grid, fmt, k = run.config, run.device, run.grid, self.fmt, self.k
        c, (hp, wp) = run.output_shape[0], grid.output
        mask_np = run._padded_masks(run.masks, (k, c, *grid.observation), grid.observation_crop)
        self.observed = mask_np.reshape(k, -1).mean(axis=1)
        self.crop = grid.output_crop
        z = torch.cat([make_input(cfg.input_kind, cfg.network.input_channels, hp, wp, cfg.input_scale,
                                  torch.Generator().manual_seed(s)) for s in run.seeds])
        self.z = z.to(dev)  # z and its noise stay in the default layout, so the draws do not
        self.noise_gens = [torch.Generator(device=dev).manual_seed(s + 1) for s in run.seeds]
        self.noise = torch.empty_like(self.z)  # depend on the memory format; the sum is converted
        self.z_fmt = self.z.contiguous(memory_format=fmt)
        self.mask_t = torch.from_numpy(mask_np.astype(np.float32)).to(dev).contiguous(memory_format=fmt)
        padded = np.zeros(mask_np.shape, dtype=np.float32)  # the padding is never observed
        padded[:, :, grid.observation_crop[0], grid.observation_crop[1]] = np.stack(run.images)
        image_t = torch.from_numpy(padded).to(dev)
        self.target = (image_t * self.mask_t).contiguous(memory_format=fmt)
        self.held = None
        if run.validation is not None:
            self.held = _HeldOut(image_t, run._padded_masks(run.validation, mask_np.shape, grid.observation_crop),
                                 self.operator, run.psnr_peak)
        self.kept = None
        if run.keep_observed:  # the loss pixels only: held-out ones stay the network's guess
            self.kept = (torch.from_numpy(mask_np).to(dev), image_t)
        run._held = self.held
        self.out_grid = (k, c, hp, wp)

    def _optimisation(self, run: "DIPBatch") -> None:
        """The optimiser, the guard, the running average, ES-WMV, the histories, compile or graph."""
        cfg, dev = run.config, run.device
        self.loss_log = torch.zeros((cfg.iterations, self.k), device=dev)
        out_grid = torch.zeros(self.out_grid, device=dev).contiguous(memory_format=self.fmt)
        self.ema = torch.zeros_like(out_grid) if cfg.ema > 0 else None
        self.es = (_WindowVariance(cfg, out_grid, cfg.iterations) if cfg.early_stop and self.held is None
                   else None)
        self.params = self.members.params
        # One fused kernel for all parameters (CPU: 6.5 -> 1.7 ms a step for the standard net).
        fused = True if dev.type in ("cpu", "cuda") else None
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr if cfg.optimizer == "adam" else 0.001,
                                          fused=fused)
        self.scaler = torch.amp.GradScaler("cuda") if run.amp_dtype == torch.float16 else None
        self.guard_ = _Guard(cfg, self.members, self.observed, self.operator, run.psnr_peak) if cfg.guard else None
        run._saved_weights = self.guard_.weights if self.guard_ else None
        self.histories = [History(device=str(dev), config={**cfg.to_dict(), "seed": s}, fast_path=run.fast_path)
                          for s in run.seeds]
        self.compiled = None
        if run.compile:
            try:
                self.compiled = torch.compile(self.members.module,
                                              mode=None if run.compile == "default" else run.compile)
            except Exception as exc:  # torch.compile is unavailable here: stay eager
                run._note_fallback(self.histories, exc)
        # no cast cache: each weight is cast once a pass anyway, and a CUDA graph must not keep one
        self.autocast = torch.autocast(device_type=dev.type, dtype=run.amp_dtype or torch.float32,
                                       enabled=run.amp_dtype is not None, cache_enabled=False)
        self.step_graph = _StepGraph(dev) if run.graph else None  # never with torch.compile (speed.py)

    # one iteration ---------------------------------------------------------------
    def step(self, it: int) -> None:
        """Forward and backward (through the step graph on CUDA); the loss goes to the log."""
        cfg = self.cfg
        if cfg.optimizer == "lbfgs" and it == cfg.lbfgs_warmup + 1:
            self.optimizer = torch.optim.LBFGS(self.params, lr=cfg.lr, max_iter=1, history_size=100,
                                               tolerance_grad=-1, tolerance_change=-1)
        self.skip = []
        if isinstance(self.optimizer, torch.optim.LBFGS):
            self.optimizer.step(self._closure)
        else:
            self._closure()
        self.loss_log[it - 1] = self.current["loss"].detach()

    def _closure(self):
        if self.cfg.sigma_p != 0:  # drawn outside any graph: the same random stream either way
            for i, g in enumerate(self.noise_gens):
                self.noise[i].normal_(generator=g)
        if self.step_graph is not None:
            out, per_member, loss = self.step_graph.step(self._forward_backward, self.optimizer)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            out, per_member, loss = self._forward_backward()
        self.current["out"], self.current["loss"] = out, per_member
        return loss

    def _forward_backward(self):
        cfg = self.cfg
        inp = self.z_fmt if cfg.sigma_p == 0 else torch.add(self.z, self.noise, alpha=cfg.sigma_p).contiguous(
            memory_format=self.fmt)
        with self.autocast:
            out = self._network(inp)
        out = out.float()
        per_member = self.operator.loss(out, self.target, self.mask_t)
        loss = per_member.sum()
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return out, per_member, loss

    def _network(self, inp):
        if self.compiled is not None:
            try:
                return self.compiled(inp)
            except Exception as exc:  # compilation failed on first use: fall back to eager
                self.compiled = None
                self.run._note_fallback(self.histories, exc)
        return self.members.forward(inp)

    def guard(self, it: int):
        """Every ``guard_every`` iterations: put back the members whose fit fell (events)."""
        guard = self.guard_
        if guard is None:
            return
        if it == 1:
            guard.start(self.current["out"])
        if it % self.cfg.guard_every:
            return
        for i, fit, best in guard.check(it, self.current["loss"], self.optimizer, self.ema, self.estimate,
                                        self.loss_log, self.current["out"]):
            self.skip.append(i)
            self.histories[i].recoveries.append({"iteration": it, "fit_psnr": fit, "previous_fit_psnr": best})
            yield from _hand_over(Recovery(it, fit, best, member=i), self.allocator)
        self.stalled = self.stalled or guard.stalled

    def optimise(self) -> None:
        """The optimiser's step (L-BFGS stepped inside ``step``).

        A member the guard just put back steps with a zero gradient.  The
        original steps with the stale gradient of the diverged weights;
        zeroing it keeps that gradient off the good weights, so the step
        comes from Adam's restored moments alone (a deliberate difference,
        docs/engine.md).
        """
        if isinstance(self.optimizer, torch.optim.LBFGS):
            return
        if self.skip:
            for p in self.params:
                if p.grad is not None:
                    if self.k == 1:
                        p.grad.zero_()
                    else:
                        p.grad[self.skip] = 0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def track(self, it: int) -> None:
        """The running average and the ES-WMV window take this iteration's output."""
        out = self.current["out"].detach()
        if self.ema is not None:  # starts at the first output, as in the original notebooks
            self.ema.copy_(out) if it == 1 else self.ema.mul_(self.cfg.ema).add_(out, alpha=1.0 - self.cfg.ema)
        if self.es is not None:
            self.es.push(it, out, self.estimate())
        self.run.completed = it

    def report(self, it: int):
        """At report and snapshot iterations: metrics, a checkpoint, early stopping (events)."""
        cfg, total = self.cfg, self.cfg.iterations
        report = it % cfg.report_every == 0 or it == total
        if self.es is not None and report:
            best_it = self.es.best_iteration(it)
            if best_it is not None and it - best_it >= cfg.es_patience:
                self._early_stop(it, best_it)
        snapshot = bool(cfg.snapshot_every) and it % cfg.snapshot_every == 0
        if report or self.stop_reason is not None or snapshot:
            event = self._progress(it, snapshot, record=report or self.stop_reason is not None)
            checkpoint = self.run.checkpoint
            if checkpoint is not None and report and it < total and self.stop_reason is None and checkpoint.due():
                checkpoint.save(self.state(it))  # at a report: the loop syncs there anyway
            yield from _hand_over(event, self.allocator)
        if self.held is not None and cfg.early_stop and report and self.stop_reason is None:
            best_it = self.held.best_iteration
            if best_it is not None and it - best_it >= cfg.es_patience:
                self._early_stop(it, best_it, rule="validation PSNR")

    def _early_stop(self, it: int, best_it: int, rule: str | None = None) -> None:
        self.stop_reason = EarlyStop(it, best_it)
        self.histories[0].early_stop = {"iteration": it, "best_iteration": best_it, **({"rule": rule} if rule else {})}

    def _progress(self, it: int, snapshot: bool, record: bool):
        return self.run._progress(it, self.cfg.iterations, self.current["loss"], self.observed, self.operator,
                                  self.estimate, self.to_host, self.t0, self.histories, snapshot, record=record)

    def should_end(self, it: int) -> bool:
        """Early stop, a fit that cannot progress, or the consumer's stop request."""
        if self.stop_reason is not None:
            return True
        if self.stalled:
            guard = self.guard_
            if not any(guard.good_iteration):
                raise DIPError(
                    f"the fit diverged at {guard.MAX_FALLS} checks in a row from the starting weights: "
                    f"lr={self.cfg.lr:g} is too high for this network ({self.cfg.optimizer}); try lr=0.01 or lower.")
            for h in self.histories:
                h.notes.append(f"stopped at iteration {it}: the fit diverged at {guard.MAX_FALLS} checks in a "
                               f"row from the last good weights (lr={self.cfg.lr:g} may be too high)")
            return True
        return self.run._stop.is_set()  # set by the consumer, possibly from another thread

    def last_report(self, it: int):
        """The events of an ending run: the early stop, or a stopped run's last metrics and
        checkpoint (a stopped run can be resumed)."""
        if self.stop_reason is not None:
            yield from _hand_over(self.stop_reason, self.allocator)
            return
        if self.stalled or not self.run._stop.is_set():
            return
        cfg = self.cfg
        report = it % cfg.report_every == 0 or it == cfg.iterations
        snapshot = bool(cfg.snapshot_every) and it % cfg.snapshot_every == 0
        event = None if report else self._progress(it, snapshot, record=True)
        if self.run.checkpoint is not None and it < cfg.iterations:
            self.run.checkpoint.save(self.state(it))
        if event is not None:
            yield from _hand_over(event, self.allocator)

    # the answer ------------------------------------------------------------------
    def estimate(self) -> torch.Tensor:
        return self.ema if self.ema is not None else self.current["out"].detach()

    def to_host(self, t: torch.Tensor) -> np.ndarray:
        if self.kept is not None:
            t = torch.where(self.kept[0], self.kept[1], t.float())
        return t[:, :, self.crop[0], self.crop[1]].float().cpu().numpy()

    def finish(self):
        """The Finished event: the answer (best validated, ES-WMV's, the guard's or the last)."""
        run, total = self.run, self.cfg.iterations
        elapsed = time.perf_counter() - self.t0
        logs = self.loss_log[:run.completed].cpu().numpy()
        if self.step_graph is not None:
            for h in self.histories:
                h.fast_path["cuda_graph"] = self.step_graph.captured
                h.notes.extend(self.step_graph.notes)
        if self.held is not None and self.held.best is not None:
            final = self.held.answer(self.histories)
        elif self.es is not None and self.stop_reason is not None:
            final = self.es.best
        elif self.guard_ is not None:
            final = self.guard_.final(self.estimate(), logs[-1].tolist(), self.histories)
        else:
            final = self.estimate()
        if not bool(torch.isfinite(final).all()):  # one check at the end, not in the loop
            raise DIPError(
                "the run diverged: its output is not finite (NaN or inf). Lower lr (now "
                f"{self.cfg.lr:g}){'' if self.cfg.guard else ' or turn the guard on'}.")
        stopped_by_user = run._stop.is_set()
        for i, h in enumerate(self.histories):
            h.loss = logs[:, i].tolist()
            if h.answer_iteration is None:
                h.answer_iteration = self.stop_reason.best_iteration if self.stop_reason else run.completed
            h.timings.update(optimise_s=elapsed, iterations=run.completed,
                             s_per_iteration=elapsed / max(run.completed, 1), stopped_by_user=stopped_by_user)
            gain = h.still_improving
            if gain is not None and not stopped_by_user and self.stop_reason is None and not self.stalled:
                h.notes.append(f"the fit was still improving when the {run.completed} iterations ran out (held-out "
                               f"PSNR +{gain:.2f} dB over the last quarter): more, e.g. "
                               f"iterations={2 * run.completed}, would most likely give a better answer")
        self.allocator.off()
        return run._finished(np.clip(self.to_host(final), 0.0, 1.0), self.histories,
                             stopped=stopped_by_user and run.completed < total)

    # checkpoints -----------------------------------------------------------------
    def state(self, it: int) -> dict:
        """Everything the next iteration depends on (see checkpoint.py)."""
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        es, held, guard = self.es, self.held, self.guard_
        return {
            "fingerprint": self.run.fingerprint, "completed": it, "elapsed": time.perf_counter() - self.t0,
            "params": [cpu(p) for p in self.params],
            "buffers": {n: cpu(b) for n, b in self.members.named_buffers().items()},
            "optimizer": self.optimizer.state_dict(), "noise": [g.get_state() for g in self.noise_gens],
            "loss_log": cpu(self.loss_log[:it]), "ema": cpu(self.ema),
            "es": None if es is None else [cpu(t) for t in (es.buffer, es.best, es.best_var, es.log, es.sums,
                                                            es.shift)],
            "held": None if held is None else [cpu(held.best), list(held.best_psnr), list(held.best_its)],
            "guard": None if guard is None else guard.state(),
            "histories": [h.to_dict() for h in self.histories],
        }

    def resume(self, checkpoint) -> int:
        """Load a checkpoint if there is one; return the iterations already done (0: none)."""
        if checkpoint is None or not checkpoint.exists():
            return 0
        saved = checkpoint.load(self.run.fingerprint, self.cfg.to_dict())
        es, held, guard = self.es, self.held, self.guard_
        with torch.no_grad():
            for p, v in zip(self.params, saved["params"]):
                p.copy_(v)
            for n, b in self.members.named_buffers().items():
                b.copy_(saved["buffers"][n])
            self.optimizer.load_state_dict(saved["optimizer"])
            for g, st in zip(self.noise_gens, saved["noise"]):
                g.set_state(st)
            n = saved["completed"]
            self.loss_log[:n].copy_(saved["loss_log"])
            if self.ema is not None:
                self.ema.copy_(saved["ema"])
            if es is not None:
                for t, v in zip((es.buffer, es.best, es.best_var, es.log, es.sums, es.shift), saved["es"]):
                    t.copy_(v)
                if len(saved["es"]) == 4:  # saved before the running sums
                    es.resum()
            if held is not None:
                best, held.best_psnr, held.best_its = saved["held"]
                held.best = None if best is None else best.to(self.dev)
            if guard is not None:
                guard.load_state(saved["guard"], self.optimizer)
        for h, d in zip(self.histories, saved["histories"]):
            for key in ("iterations", "fit_psnr", "psnr", "ssim", "val_psnr", "recoveries", "early_stop"):
                setattr(h, key, d[key])
            h.notes.append(f"resumed from a checkpoint at iteration {n}")
        self.run.completed = n
        self.t0 -= saved["elapsed"]  # the time already spent counts in the history
        return n

    # the process around the run ----------------------------------------------------
    @contextlib.contextmanager
    def process_settings(self):
        """Torch's process-wide settings for this run (threads, cuDNN autotuning, freed-memory
        reuse), put back after it however it ends."""
        dev, run = self.dev, self.run
        self.allocator.on()
        threads_before = torch.get_num_threads()
        if run.threads:  # process-wide in torch: set for this run, put back after it
            torch.set_num_threads(run.threads)
        cudnn_benchmark = torch.backends.cudnn.benchmark
        if dev.type == "cuda":  # one image size for thousands of steps: pick the fastest kernels
            torch.backends.cudnn.benchmark = True
        for h in self.histories:
            h.fast_path["reuse_freed_memory"] = self.allocator.available
            h.fast_path["threads"] = run.threads
        try:
            yield
        finally:
            torch.set_num_threads(threads_before)
            torch.backends.cudnn.benchmark = cudnn_benchmark

    def release(self) -> None:
        """Drop every device tensor and put the process settings back."""
        run = self.run
        run.network = None
        run._saved_weights = run._members = run._held = None
        for name in ("current", "members", "optimizer", "z", "z_fmt", "noise", "target", "mask_t", "loss_log",
                     "ema", "es", "guard_", "compiled", "step_graph", "held", "kept", "operator"):
            setattr(self, name, None)
        free_device_memory(self.dev)
        self.allocator.off()  # after the tensors are gone, so the trim frees them


class _StepGraph:
    """An iteration's forward and backward pass, recorded once as a CUDA graph and then replayed.

    The first ``WARMUP`` iterations run eagerly on a side stream (autograd
    and cuDNN settle their streams, workspaces and kernel choices there, as
    capture requires), the next one is recorded and every later one replays
    the recording: the same kernels on the same memory, launched at once.
    The noise draw and the optimiser step stay outside, so the random
    streams, the guard and checkpoints behave exactly as in eager mode.  If
    recording fails, the run goes on eagerly with a note in its history.
    """

    WARMUP = 3

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.graph = None
        self.outputs = None
        self.calls = 0
        self.failed = False
        self.notes: list[str] = []

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def step(self, forward_backward, optimizer):
        """(out, per-member loss, loss) of this iteration, with the gradients in ``.grad``."""
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        optimizer.zero_grad(set_to_none=True)  # at recording: .grad then lives in the graph's memory
        if self.failed:
            return forward_backward()
        self.calls += 1
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)
        try:
            with torch.cuda.stream(self.stream):
                if self.calls <= self.WARMUP:
                    return forward_backward()
                return self._record(forward_backward, optimizer)
        finally:
            main.wait_stream(self.stream)

    def _record(self, forward_backward, optimizer):
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                outputs = forward_backward()
        except Exception as exc:  # this iteration and the rest run eagerly
            self.failed = True
            self.notes.append(f"CUDA graph unavailable ({type(exc).__name__}: {str(exc)[:200]}); ran eager")
            optimizer.zero_grad(set_to_none=True)
            return forward_backward()
        graph.replay()  # recording ran nothing: this is the iteration's computation
        self.graph, self.outputs = graph, outputs
        return outputs


class _Guard:
    """The destabilisation guard, made safe: nothing it returns is worse than its last good check.

    The original code compared the fit PSNR with the previous check only and
    restored the weights but not Adam's moments.  Here every member is
    compared with its *best* accepted fit (the fit at iteration 1 before any
    check), so a fall spread over two checks is caught; a non-finite loss is
    a fall at once; the optimiser state and the running average are put back
    with the weights; and the answer falls back to the estimate of the last
    good check when the run ends in a fall.  The fit is read at guard
    iterations only (the one sync the original had too).
    """

    MAX_FALLS = 3  # falls in a row from the same weights: the run cannot progress

    def __init__(self, cfg: RunConfig, members: "_Members", observed, operator: Operator | None = None,
                 peak: float = 1.0):
        self.cfg = cfg
        self.operator = operator or Identity()  # its fit metric reads the losses
        self.peak = peak  # see DIPBatch's psnr_peak
        self.members = members
        self.k = members.count
        self.observed = observed
        self.weights = [p.detach().clone() for p in members.params]
        self.moments = None          # optimiser state at the last good check; None: a fresh one
        self.best = [None] * self.k  # best accepted fit PSNR per member
        self.good_iteration = [0] * self.k
        self.falls = [0] * self.k
        self.good_estimate = None

    def fits(self, losses) -> list[float]:
        return _fit_psnrs(self.operator, losses, self.observed, self.peak)

    def start(self, estimate: torch.Tensor) -> None:
        """After iteration 1: the starting estimate is the fallback until a check passes."""
        self.good_estimate = estimate.detach().clone()

    def check(self, it: int, loss: torch.Tensor, optimizer, ema, estimate, loss_log, out) -> list[tuple]:
        """Compare, then save or put back each member; return (member, fit, best) of those put back.

        A member put back also has this iteration's output replaced by its
        last good estimate, so the average, previews and the answer never
        take in the fallen output.
        """
        fits = self.fits(loss.tolist())
        fallen = []
        for i, fit in enumerate(fits):
            if self.best[i] is None:  # a blow-up before the first check must not become the baseline
                self.best[i] = self.fits(loss_log[0].tolist())[i]
            if not math.isfinite(fit) or fit < self.best[i] - self.cfg.guard_drop_db:
                fallen.append((i, fit, self.best[i]))
        bad = {i for i, _, _ in fallen}
        with torch.no_grad():
            for i in range(self.k):
                if i in bad:
                    self._put_back(i, optimizer, ema)
                    out.detach()[i].copy_(self.good_estimate[i])
                    self.falls[i] += 1
                else:
                    self._save(i, optimizer, estimate)
                    self.best[i] = max(self.best[i], fits[i])
                    self.good_iteration[i], self.falls[i] = it, 0
        return fallen

    @property
    def stalled(self) -> bool:
        return all(f >= self.MAX_FALLS for f in self.falls)

    def final(self, estimate: torch.Tensor, last_loss: list[float], histories) -> torch.Tensor:
        """The estimate to return: a member whose last iterate fell gets its last good one."""
        fits = self.fits(last_loss)
        out = estimate
        for i, fit in enumerate(fits):
            best = self.best[i] if self.best[i] is not None else -math.inf
            if not math.isfinite(fit) or fit < best - self.cfg.guard_drop_db:
                if out is estimate:
                    out = estimate.clone()
                out[i].copy_(self.good_estimate[i])
                histories[i].answer_iteration = self.good_iteration[i] or 1
                histories[i].notes.append(
                    f"the fit fell at the end of the run ({fit:.2f} dB against the best {best:.2f}); "
                    f"the answer is the estimate of the last good check (iteration "
                    f"{self.good_iteration[i] or 1})")
        return out

    def state(self) -> dict:
        """The guard's memory for a checkpoint (the optimiser's moments as plain tensors)."""
        return {"weights": [w.detach().cpu() for w in self.weights],
                "moments": None if self.moments is None else
                [{key: v.cpu() for key, v in st.items()} for st in self.moments[1]],
                "best": list(self.best), "good_iteration": list(self.good_iteration),
                "falls": list(self.falls), "good_estimate": self.good_estimate.detach().cpu()}

    def load_state(self, state: dict, optimizer) -> None:
        for w, v in zip(self.weights, state["weights"]):
            w.copy_(v)
        device = self.weights[0].device
        self.moments = None if state["moments"] is None else (
            optimizer, [{key: v.to(device) for key, v in st.items()} for st in state["moments"]])
        self.best, self.good_iteration, self.falls = state["best"], state["good_iteration"], state["falls"]
        self.good_estimate = state["good_estimate"].to(device)

    def _rows(self, tensors, i):
        return tensors if self.k == 1 else [t[i] for t in tensors]

    def _save(self, i, optimizer, estimate) -> None:
        for good, p in zip(self._rows(self.weights, i), self.members.member_params(i)):
            good.copy_(p)
        self.good_estimate[i].copy_(estimate()[i])
        if not isinstance(optimizer, torch.optim.Adam):
            self.moments = None
            return
        state = [optimizer.state.get(p, {}) for p in self.members.params]
        if self.moments is None or self.moments[0] is not optimizer:
            self.moments = (optimizer, [{key: v.detach().clone() for key, v in st.items()
                                         if torch.is_tensor(v)} for st in state])
            return
        for saved, st in zip(self.moments[1], state):
            self._copy_member(saved, st, i)

    def _put_back(self, i, optimizer, ema) -> None:
        for p, good in zip(self.members.member_params(i), self._rows(self.weights, i)):
            p.copy_(good)
        if ema is not None:
            ema[i].copy_(self.good_estimate[i])
        if not isinstance(optimizer, torch.optim.Adam) or self.moments is None or self.moments[0] is not optimizer:
            if self.k == 1 or not isinstance(optimizer, torch.optim.Adam):
                optimizer.state.clear()  # a fresh optimiser from the good weights
            else:
                for p in self.members.params:
                    for key, value in optimizer.state.get(p, {}).items():
                        if torch.is_tensor(value) and value.dim() > 0:
                            value[i].zero_()
            return
        put = self._damp_member if self.cfg.guard_restore == "damped" else self._copy_member
        for p, saved in zip(self.members.params, self.moments[1]):
            put(optimizer.state.get(p, {}), saved, i)

    def _damp_member(self, dst: dict, src: dict, i: int) -> None:
        """guard_restore="damped": no momentum into the fall, and the fall's large second
        moments kept, so the next steps are small (a NaN or inf in them is dropped)."""
        for key, value in src.items():
            if key not in dst or not torch.is_tensor(value):
                continue
            if value.dim() == 0 or key not in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                self._copy_member({key: dst[key]}, {key: value}, i)
                continue
            now, good = (dst[key], value) if self.k == 1 else (dst[key][i], value[i])
            if key == "exp_avg":
                now.zero_()
            else:
                now.copy_(torch.where(torch.isfinite(now), torch.maximum(now, good), good))

    def _copy_member(self, dst: dict, src: dict, i: int) -> None:
        """Member i's part of one parameter's optimiser state, ``src`` into ``dst``.

        With one member that is every tensor; with several, row i of each
        stacked tensor (the shared 0-d step count stays as it is)."""
        for key, value in src.items():
            if key not in dst or not torch.is_tensor(value):
                continue
            if self.k == 1:
                dst[key].copy_(value)
            elif value.dim() > 0:
                dst[key][i].copy_(value[i])


class _HeldOut:
    """Held-out observed pixels: a no-reference estimate of quality, and the best answer so far.

    The squared error on the held-out pixels is computed on the device at
    report iterations only (one read per report, no extra sync).  Each
    member keeps a device copy of its estimate at its best validation PSNR.
    """

    def __init__(self, image: torch.Tensor, mask_np: np.ndarray, operator: Operator, peak: float = 1.0):
        self.operator = operator
        self.peak = peak  # see DIPBatch's psnr_peak
        self.mask_np = mask_np
        self.mask = torch.from_numpy(mask_np.astype(np.float32)).to(image.device)
        self.target = image * self.mask
        self.count = self.mask.sum(dim=(1, 2, 3)).clamp(min=1)
        self.best = None
        self.best_psnr = [-math.inf] * mask_np.shape[0]
        self.best_its = [None] * mask_np.shape[0]

    def check(self, it: int, estimate: torch.Tensor) -> list[float]:
        est = estimate.detach().float().clamp(0, 1)
        mse = ((self.operator.apply(est) - self.target) * self.mask).square().sum(dim=(1, 2, 3)) / self.count
        psnrs = [_psnr_from_mse(v, self.peak) for v in mse.tolist()]
        if self.best is None:
            self.best = est.clone()
        for i, value in enumerate(psnrs):
            if value > self.best_psnr[i]:  # NaN never counts as better
                self.best_psnr[i], self.best_its[i] = value, it
                self.best[i].copy_(est[i])
        return psnrs

    @property
    def best_iteration(self) -> int | None:
        its = [i for i in self.best_its if i is not None]
        return max(its) if its else None

    def answer(self, histories) -> torch.Tensor:
        for h, it in zip(histories, self.best_its):
            h.answer_iteration = it
        return self.best


class _WindowVariance:
    """ES-WMV state on the device: the last W outputs, their variance, and the estimate (the
    running average when there is one, as the answer always is) at the least variance.

    The variance comes from running sums of the window and of its squares, in float64, so an
    iteration costs a few passes over one output instead of two over all W (half an iteration
    of the standard net on a CPU at 128x128). Each time the window turns over, the sums are
    recomputed from it, so rounding never builds up, around its mean, so late in a run (pixels
    that barely move) the squares do not cancel. Nothing syncs: the host reads the variance
    log only at report iterations.
    """

    def __init__(self, cfg: RunConfig, output: torch.Tensor, total: int):
        self.window = cfg.es_window
        dev = output.device
        exact = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
        self.buffer = torch.zeros((self.window, *output.shape[1:]), device=dev)
        self.sums = torch.zeros((2, *output.shape[1:]), dtype=exact, device=dev)  # of x - shift, squared
        self.shift = torch.zeros(output.shape[1:], dtype=exact, device=dev)
        self.best = torch.zeros_like(output)
        self.best_var = torch.full((), float("inf"), dtype=exact, device=dev)
        self.log = torch.full((total,), float("inf"), dtype=exact, device=dev)

    def push(self, it: int, out: torch.Tensor, estimate: torch.Tensor) -> None:
        slot = self.buffer[(it - 1) % self.window]
        if it % self.window == 0:
            slot.copy_(out[0])
            self.resum()
        else:
            new, old = out[0].to(self.sums.dtype) - self.shift, slot.to(self.sums.dtype) - self.shift
            change = new - old
            self.sums[0].add_(change)
            self.sums[1].addcmul_(change, new + old)  # new**2 - old**2
            slot.copy_(out[0])
        if it >= self.window:
            mean = self.sums[0] / self.window
            var = (self.sums[1] / self.window - mean * mean).clamp_(min=0).mean()
            self.log[it - 1] = var
            better = var < self.best_var
            self.best_var = torch.where(better, var, self.best_var)
            self.best.copy_(torch.where(better, estimate, self.best))

    def resum(self) -> None:
        """The sums anew from the window, around its mean (one output at a time: no float64 copy)."""
        self.shift.zero_()
        for x in self.buffer:
            self.shift.add_(x)
        self.shift.div_(self.window)
        self.sums.zero_()
        for x in self.buffer:
            x = x.to(self.sums.dtype) - self.shift
            self.sums[0].add_(x)
            self.sums[1].addcmul_(x, x)

    def best_iteration(self, it: int) -> int | None:
        if it < self.window:
            return None
        return int(np.argmin(self.log[:it].cpu().numpy())) + 1


# ----------------------------------------------------------------------------- checks

def _check_chw(array, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 3:
        raise DIPError(f"{name} must be (C, H, W) for the engine (got shape {a.shape}); "
                       "use src_core.restore() for other layouts.")
    if a.dtype.kind not in "fiub":
        raise DIPError(f"{name} has unsupported dtype {a.dtype}.")
    a = a.astype(np.float32)  # always a copy: the caller's array is never touched
    if a.size == 0:
        raise DIPError(f"{name} is empty (shape {a.shape}).")
    if not np.isfinite(a).all():
        raise DIPError(f"{name} has non-finite values (NaN or inf); src_core.restore() treats "
                       "them as missing pixels, or replace them before calling DIPRun.")
    if a.min() < 0 or a.max() > 1:
        raise DIPError(f"{name} values run from {a.min():g} to {a.max():g}; the engine takes [0, 1] "
                       "(divide 8-bit data by 255), or use src_core.restore(), which scales any range.")
    return a


def _check_mask(mask, shape, name: str = "mask", may_be_empty: bool = False) -> np.ndarray:
    c, h, w = shape
    if mask is None:
        return np.ones((1, h, w), dtype=bool)
    m = np.asarray(mask)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[-2:] != (h, w) or m.shape[0] not in (1, c):
        raise DIPError(f"{name} shape {np.shape(mask)} does not match image shape {shape}; "
                       f"give a {name} of shape {(h, w)} (True = observed).")
    if m.dtype != bool:
        if m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all():
            raise DIPError(f"{name} values must be True/False or 0/1 (True = observed); threshold "
                           "a grey mask first, e.g. mask > 0.5.")
    m = m.astype(bool)
    if may_be_empty:
        return m
    if not m.any():
        raise DIPError("the mask has no observed pixel (True = observed, False = missing); "
                       "nothing to fit. Check that the mask is not inverted.")
    return m
