"""The optimisation loop, as a generator of progress events.

One loop serves the napari widget, the CLI and notebooks: each drives a
:class:`DIPRun` and decides what to do with its events.  The hot loop never
waits for the device: the loss of every iteration is written into a device
tensor, and the host reads values only every ``report_every`` (metrics),
``guard_every`` (destabilisation guard) and ``snapshot_every`` iterations.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .config import RunConfig
from .devices import free_device_memory, resolve_device
from .errors import DIPError
from .network import SkipNet, build_network


# ----------------------------------------------------------------------------- events

@dataclass
class Progress:
    """Metrics every ``report_every`` iterations; ``output`` only on snapshot iterations.

    ``fit_psnr`` compares the output with the observed pixels only (the
    quantity a user without ground truth can see).  ``psnr``/``ssim`` compare
    with the clean reference when one was given (scikit-image, data_range 1,
    output clipped to [0, 1]).  ``output`` is (C, H, W) float32 in [0, 1].
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
    kind: str = "recovery"


@dataclass
class EarlyStop:
    """ES-WMV stopped the run; the answer is the output at ``best_iteration``."""

    iteration: int
    best_iteration: int
    kind: str = "early_stop"


@dataclass
class History:
    """Everything a run measured, ready for JSON."""

    iterations: list = field(default_factory=list)
    fit_psnr: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    recoveries: list = field(default_factory=list)
    early_stop: dict | None = None
    timings: dict = field(default_factory=dict)
    device: str = ""
    config: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def final_psnr(self) -> float | None:
        return self.psnr[-1] if self.psnr and self.psnr[-1] is not None else None


@dataclass
class Finished:
    """Last event: the answer (C, H, W) float32 in [0, 1] and the run's history."""

    output: np.ndarray
    history: History
    completed: int
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

def psnr_ssim(estimate: np.ndarray, reference: np.ndarray, with_ssim: bool = True):
    """PSNR and SSIM of a (C, H, W) estimate, clipped to [0, 1], with data_range 1."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    est = np.clip(estimate, 0.0, 1.0)
    psnr = float(peak_signal_noise_ratio(reference, est, data_range=1.0))
    ssim = None
    if with_ssim and min(est.shape[-2:]) >= 7:
        ssim = float(structural_similarity(reference, est, data_range=1.0, channel_axis=0))
    return psnr, ssim


def _psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


# ----------------------------------------------------------------------------- the run

class DIPRun:
    """One Deep Image Prior optimisation, iterated as events.

    ``image``: (C, H, W) float in [0, 1], finite.  ``mask``: bool, True =
    observed, of shape (H, W), (1, H, W) or (C, H, W).  ``reference``: clean
    (C, H, W) image for true PSNR/SSIM, optional.

    Iterate to run; ``close()`` (or leaving a ``for`` loop and dropping the
    run) stops at once and frees device memory.  The network and optimiser
    are built lazily, on the first ``next()``, so construction only checks.

    >>> import numpy as np
    >>> from src_core import DIPRun, preset, bernoulli_mask
    >>> img = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    >>> cfg = preset("cpu", scales=2, down_channels=8, up_channels=8, iterations=4, report_every=2)
    >>> events = list(DIPRun(img, bernoulli_mask((32, 32), 0.5), cfg))
    >>> [e.kind for e in events]
    ['progress', 'progress', 'finished']
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray | None = None,
                 config: RunConfig | None = None, reference: np.ndarray | None = None):
        self.config = (config or RunConfig()).validate()
        self.device = resolve_device(self.config.device)
        self.image = _check_chw(image, "image")
        c, h, w = self.image.shape
        self.mask = _check_mask(mask, self.image.shape)
        self.reference = None if reference is None else _check_chw(reference, "reference")
        if self.reference is not None and self.reference.shape != self.image.shape:
            raise DIPError(
                f"reference shape {self.reference.shape} does not match image shape "
                f"{self.image.shape}; give the clean version of the same image."
            )
        need = self.config.network.min_size()
        if min(h, w) < need:
            raise DIPError(
                f"image of {h}x{w} pixels is too small for a {self.config.network.scales}-scale "
                f"network (it needs at least {need} pixels per side); use fewer scales "
                f"(for example scales={max(1, int(math.log2(max(2, min(h, w)))) - 2)})."
            )
        self.multiple = 2 ** self.config.network.scales
        self.network: SkipNet | None = None
        self.completed = 0
        self._stop_requested = False
        self._events = self._loop()

    # generator protocol -------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        return next(self._events)

    def close(self) -> None:
        """Stop now and free device memory, discarding the result; safe to call twice."""
        self._events.close()

    def request_stop(self) -> None:
        """Finish after the current iteration: the next events are a last Progress and a
        Finished holding the partial answer.  Safe to call from another thread."""
        self._stop_requested = True

    def run(self) -> "Finished":
        """Run to the end and return the final event."""
        last = None
        for event in self:
            last = event
        return last

    # the loop -----------------------------------------------------------------
    def _loop(self):
        cfg = self.config
        dev = self.device
        t_setup = time.perf_counter()
        from .imaging import pad_reflect

        padded, crop = pad_reflect(self.image, self.multiple)
        mask_full = np.broadcast_to(self.mask, self.image.shape)
        mask_padded = np.zeros(padded.shape, dtype=bool)
        mask_padded[:, crop[0], crop[1]] = mask_full
        c, hp, wp = padded.shape

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = build_network(cfg.network, output_channels=c)
        self.network = net = net.to(dev)
        cpu_gen = torch.Generator().manual_seed(cfg.seed)
        z = make_input(cfg.input_kind, cfg.network.input_channels, hp, wp, cfg.input_scale,
                       cpu_gen).to(dev)
        noise_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
        noise = torch.empty_like(z)

        mask_t = torch.from_numpy(mask_padded.astype(np.float32))[None].to(dev)
        target = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None].to(dev) * mask_t
        observed_fraction = float(mask_padded.mean())
        total = cfg.iterations
        loss_log = torch.zeros(total, device=dev)
        ema = torch.zeros_like(target) if cfg.ema > 0 else None

        es_buffer = es_best = es_best_var = None
        es_var_log = None
        if cfg.early_stop:
            es_buffer = torch.zeros((cfg.es_window, *target.shape[1:]), device=dev)
            es_best = torch.zeros_like(target)
            es_best_var = torch.full((), float("inf"), device=dev)
            es_var_log = torch.full((total,), float("inf"), device=dev)

        params = list(net.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr if cfg.optimizer == "adam" else 0.001)
        use_lbfgs = cfg.optimizer == "lbfgs"
        saved_weights = [p.detach().clone() for p in params] if cfg.guard else None
        self._saved_weights = saved_weights
        last_fit = None
        history = History(device=str(dev), config=cfg.to_dict())
        current = {}

        def closure():
            optimizer.zero_grad(set_to_none=True)
            inp = z if cfg.sigma_p == 0 else z + noise.normal_(generator=noise_gen) * cfg.sigma_p
            out = net(inp)
            loss = F.mse_loss(out * mask_t, target)
            loss.backward()
            current["out"], current["loss"] = out, loss
            return loss

        def estimate() -> torch.Tensor:
            return ema if ema is not None else current["out"].detach()

        def to_host(t: torch.Tensor) -> np.ndarray:
            return t[0, :, crop[0], crop[1]].float().cpu().numpy()

        def fit_psnr(loss_value: float) -> float:
            return _psnr_from_mse(loss_value / max(observed_fraction, 1e-12))

        history.timings["setup_s"] = time.perf_counter() - t_setup
        t0 = time.perf_counter()
        stop_reason = None
        try:
            net.train()
            for it in range(1, total + 1):
                if use_lbfgs and it == cfg.lbfgs_warmup + 1:
                    optimizer = torch.optim.LBFGS(params, lr=cfg.lr, max_iter=1, history_size=100,
                                                  tolerance_grad=-1, tolerance_change=-1)
                skip_step = False
                if isinstance(optimizer, torch.optim.LBFGS):
                    optimizer.step(closure)
                else:
                    closure()
                loss = current["loss"]
                loss_log[it - 1] = loss.detach()

                if cfg.guard and it % cfg.guard_every == 0:
                    fit = fit_psnr(loss.item())
                    if last_fit is not None and (fit < last_fit - cfg.guard_drop_db or not math.isfinite(fit)):
                        with torch.no_grad():
                            for p, saved in zip(params, saved_weights):
                                p.copy_(saved)
                        skip_step = True
                        history.recoveries.append({"iteration": it, "fit_psnr": fit,
                                                   "previous_fit_psnr": last_fit})
                        yield Recovery(it, fit, last_fit)
                    else:
                        with torch.no_grad():
                            for p, saved in zip(params, saved_weights):
                                saved.copy_(p)
                        last_fit = fit
                if not skip_step and not isinstance(optimizer, torch.optim.LBFGS):
                    optimizer.step()

                out = current["out"].detach()
                if ema is not None:
                    ema.mul_(cfg.ema).add_(out, alpha=1.0 - cfg.ema)
                if es_buffer is not None:
                    es_buffer[(it - 1) % cfg.es_window].copy_(out[0])
                    if it >= cfg.es_window:
                        var = es_buffer.var(dim=0, unbiased=False).mean()
                        es_var_log[it - 1] = var
                        better = var < es_best_var
                        es_best_var = torch.where(better, var, es_best_var)
                        es_best.copy_(torch.where(better, out, es_best))
                self.completed = it

                report = it % cfg.report_every == 0 or it == total
                if es_buffer is not None and report and it >= cfg.es_window:
                    log = es_var_log[:it].cpu().numpy()
                    best_it = int(np.argmin(log)) + 1
                    if it - best_it >= cfg.es_patience:
                        stop_reason = EarlyStop(it, best_it)
                        history.early_stop = {"iteration": it, "best_iteration": best_it}
                if report or stop_reason is not None:
                    yield self._progress(it, total, loss, fit_psnr, estimate, to_host, t0, history,
                                         force_snapshot=False)
                elif cfg.snapshot_every and it % cfg.snapshot_every == 0:
                    yield self._progress(it, total, loss, fit_psnr, estimate, to_host, t0, history,
                                         force_snapshot=True)
                if stop_reason is not None:
                    yield stop_reason
                    break
                if self._stop_requested:
                    if not report:
                        yield self._progress(it, total, loss, fit_psnr, estimate, to_host, t0,
                                             history, force_snapshot=False)
                    break

            elapsed = time.perf_counter() - t0
            final = es_best if stop_reason is not None else estimate()
            history.loss = loss_log[:self.completed].cpu().tolist()
            history.timings.update(optimise_s=elapsed, iterations=self.completed,
                                   s_per_iteration=elapsed / max(self.completed, 1))
            history.timings["stopped_by_user"] = self._stop_requested
            yield Finished(np.clip(to_host(final), 0.0, 1.0), history, self.completed,
                           stopped=self._stop_requested and self.completed < total)
        finally:
            self.network = None
            current.clear()
            del net, optimizer, z, noise, target, mask_t, loss_log, ema, es_buffer, es_best
            free_device_memory(dev)

    def _progress(self, it, total, loss, fit_psnr, estimate, to_host, t0, history, force_snapshot):
        cfg = self.config
        loss_value = float(loss.item())
        fit = fit_psnr(loss_value)
        snapshot = force_snapshot or (cfg.snapshot_every and it % cfg.snapshot_every == 0)
        need_host = snapshot or self.reference is not None
        host = to_host(estimate()) if need_host else None
        psnr = ssim = None
        if self.reference is not None:
            psnr, ssim = psnr_ssim(host, self.reference, cfg.compute_ssim)
        elapsed = time.perf_counter() - t0
        if not force_snapshot:
            history.iterations.append(it)
            history.fit_psnr.append(fit)
            history.psnr.append(psnr)
            history.ssim.append(ssim)
        return Progress(it, total, loss_value, fit, psnr, ssim, elapsed,
                        np.clip(host, 0, 1) if snapshot else None)


# ----------------------------------------------------------------------------- checks

def _check_chw(array, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 3:
        raise DIPError(f"{name} must be (C, H, W) for the engine (got shape {a.shape}); "
                       "use src_core.restore() for other layouts.")
    if a.dtype.kind not in "fiub":
        raise DIPError(f"{name} has unsupported dtype {a.dtype}.")
    a = a.astype(np.float32)  # always a copy: the caller's array is never touched
    if not np.isfinite(a).all():
        raise DIPError(f"{name} has non-finite values (NaN or inf); src_core.restore() treats "
                       "them as missing pixels, or replace them before calling DIPRun.")
    return a


def _check_mask(mask, shape) -> np.ndarray:
    c, h, w = shape
    if mask is None:
        return np.ones((1, h, w), dtype=bool)
    m = np.asarray(mask)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[-2:] != (h, w) or m.shape[0] not in (1, c):
        raise DIPError(f"mask shape {np.shape(mask)} does not match image shape {shape}; "
                       f"give a mask of shape {(h, w)} (True = observed).")
    m = m.astype(bool)
    if not m.any():
        raise DIPError("the mask has no observed pixel (True = observed, False = missing); "
                       "nothing to fit. Check that the mask is not inverted.")
    return m
