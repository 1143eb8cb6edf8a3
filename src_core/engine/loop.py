"""A run's loop: one object that owns the device state, steps, reports and finishes.

:class:`Fit` is built from a checked :class:`~src_core.engine.spec.RunSpec` and hands out
events (:mod:`src_core.engine.events`); it writes nothing back to the run that made it.  The
hot loop never waits for the device: the loss of every iteration is written into a device
tensor, and the host reads values only every ``report_every`` (metrics), ``guard_every``
(the guard) and ``snapshot_every`` iterations.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..devices import free_device_memory
from ..errors import DIPError, Diverged
from .. import speed
from .events import EarlyStop, EnsembleFinished, History, Progress, Recovery
from .graph import StepGraph
from .guard import Guard
from .members import Members, make_input
from .metrics import fit_psnrs, psnr_ssim
from .spec import RunSpec
from .stopping import HeldOut, WindowVariance


def padded_masks(masks, shape, crop) -> np.ndarray:
    """Per-member masks on the padded grid (the padding is neither observed nor held out)."""
    out = np.zeros(shape, dtype=bool)
    for i, m in enumerate(masks):
        out[i, :, crop[0], crop[1]] = np.broadcast_to(m, (shape[1], *m.shape[-2:]))
    return out


def _hand_over(event, allocator):
    """Yield an event with the allocator paused while the consumer holds control."""
    with allocator.paused():
        yield event


class Fit:
    """A run's loop and everything it holds: the only owner of the run's device state.

    Built from a :class:`~src_core.engine.spec.RunSpec` when the run starts: the grids, the
    network members, the input code and its noise, the observation and its mask, the
    optimiser, and the optional guard, running average, ES-WMV window and held-out pixels.
    :meth:`events` steps it, reports, and finishes; nothing outside reads or writes its state
    but through its properties, and :meth:`release` drops it all.
    """

    def __init__(self, spec: RunSpec, checkpoint: Checkpoint | None = None,
                 stop: threading.Event | None = None):
        t_setup = time.perf_counter()
        self.spec, self.cfg, self.dev = spec, spec.config, spec.device
        self.checkpoint = checkpoint
        self.stop_flag = stop if stop is not None else threading.Event()
        self.k = spec.count
        self.completed = 0
        self.operator = spec.operator.to(spec.device)
        self.fidelity = spec.fidelity
        self.members = Members(spec.config, spec.output_shape[0], spec.seeds, spec.device,
                               spec.memory_format, spec.strategy)
        if spec.start is not None:
            self.members.start_from(spec.start)
        self.fmt = spec.memory_format
        self._data(spec)
        self._optimisation(spec)
        self.current: dict = {}
        self.skip: list[int] = []
        self.stop_reason = None
        self.stalled = False
        self.allocator = speed.FreedMemoryReuse(spec.device)
        self.histories[0].timings["setup_s"] = time.perf_counter() - t_setup
        self.t0 = time.perf_counter()

    @property
    def network(self):
        """The live generator of a one-member run (None after :meth:`release`)."""
        return None if self.members is None or self.k != 1 else self.members.module

    # the loop ----------------------------------------------------------------------
    def events(self):
        """Resume if there is a checkpoint, then for each iteration: step, guard, optimise,
        track, report, stop?; then the last event.  Everything is released however it ends."""
        try:
            start = self.resume(self.checkpoint) + 1
            with self.process_settings():
                for it in range(start, self.cfg.iterations + 1):
                    self.step(it)
                    yield from self.guard(it)
                    self.optimise()
                    self.track(it)
                    yield from self.report(it)
                    if self.should_end(it):
                        yield from self.last_report(it)
                        break
                yield self.finish()
        finally:
            self.release()

    def _data(self, spec: RunSpec) -> None:
        """The input code and its noise streams, the observation and its masks on the device."""
        cfg, dev, grid, fmt, k = spec.config, spec.device, spec.grid, self.fmt, self.k
        c, (hp, wp) = spec.output_shape[0], grid.output
        mask_np = padded_masks(spec.masks, (k, c, *grid.observation), grid.observation_crop)
        self.observed = mask_np.reshape(k, -1).mean(axis=1)
        self.crop = grid.output_crop
        zc, zh, zw = cfg.network.input_shape(hp, wp)
        z = torch.cat([make_input(cfg.input_kind, zc, zh, zw, cfg.input_scale,
                                  torch.Generator().manual_seed(s)) for s in spec.seeds])
        self.z = z.to(dev)  # z and its noise stay in the default layout, so the draws do not
        self.noise_gens = [torch.Generator(device=dev).manual_seed(s + 1) for s in spec.seeds]
        self.noise = torch.empty_like(self.z)  # depend on the memory format; the sum is converted
        self.z_fmt = self.z.contiguous(memory_format=fmt)
        self.mask_t = torch.from_numpy(mask_np.astype(np.float32)).to(dev).contiguous(memory_format=fmt)
        padded = np.zeros(mask_np.shape, dtype=np.float32)  # the padding is never observed
        padded[:, :, grid.observation_crop[0], grid.observation_crop[1]] = np.stack(spec.images)
        image_t = torch.from_numpy(padded).to(dev)
        self.target = (image_t * self.mask_t).contiguous(memory_format=fmt)
        self.held = None
        if spec.validation is not None:
            self.held = HeldOut(image_t, padded_masks(spec.validation, mask_np.shape, grid.observation_crop),
                                self.operator, spec.psnr_peak, self.fidelity)
        self.kept = None
        if spec.keep_observed:  # the loss pixels only: held-out ones stay the network's guess
            self.kept = (torch.from_numpy(mask_np).to(dev), image_t)
        self.out_grid = (k, c, hp, wp)

    def _optimisation(self, spec: RunSpec) -> None:
        """The optimiser, the guard, the running average, ES-WMV, the histories, compile or graph."""
        cfg, dev = spec.config, spec.device
        self.loss_log = torch.zeros((cfg.iterations, self.k), device=dev)
        out_grid = torch.zeros(self.out_grid, device=dev).contiguous(memory_format=self.fmt)
        self.ema = torch.zeros_like(out_grid) if cfg.ema > 0 else None
        self.es = WindowVariance(cfg, out_grid, cfg.iterations) if spec.window else None
        self.params = self.members.params
        # One fused kernel for all parameters (CPU: 6.5 -> 1.7 ms a step for the standard net).
        fused = True if dev.type in ("cpu", "cuda") else None
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr if cfg.optimizer == "adam" else 0.001,
                                          fused=fused)
        self.scaler = torch.amp.GradScaler("cuda") if spec.amp_dtype == torch.float16 else None
        self.guard_ = (Guard(cfg, self.members, self.observed, self.fidelity, spec.psnr_peak) if cfg.guard
                       else None)
        self.histories = [History(device=str(dev), config={**cfg.to_dict(), "seed": s}, fast_path=spec.fast_path)
                          for s in spec.seeds]
        self.compiled = None
        if spec.compile:
            try:
                self.compiled = torch.compile(self.members.module,
                                              mode=None if spec.compile == "default" else spec.compile)
            except Exception as exc:  # torch.compile is unavailable here: stay eager
                self._note_fallback(exc)
        # no cast cache: each weight is cast once a pass anyway, and a CUDA graph must not keep one
        self.autocast = torch.autocast(device_type=dev.type, dtype=spec.amp_dtype or torch.float32,
                                       enabled=spec.amp_dtype is not None, cache_enabled=False)
        self.step_graph = StepGraph(dev) if spec.graph else None  # never with torch.compile (speed.py)

    def _note_fallback(self, exc) -> None:
        note = f"torch.compile unavailable ({type(exc).__name__}: {str(exc)[:200]}); ran eager"
        for h in self.histories:
            h.notes.append(note)
            h.fast_path["compile"] = False

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
        per_member = self.fidelity.loss(self.operator.apply(out), self.target, self.mask_t)
        loss = per_member.sum()
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return out, per_member, loss

    def _network(self, inp):
        if self.compiled is not None:
            try:
                return self.compiled(inp)
            except Exception as exc:  # compilation failed on first use: fall back to eager
                self.compiled = None
                self._note_fallback(exc)
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
            rate = min(self.cfg.ema, (1 + it) / (10 + it)) if self.cfg.ema_warmup else self.cfg.ema
            self.ema.copy_(out) if it == 1 else self.ema.mul_(rate).add_(out, alpha=1.0 - rate)
        if self.es is not None:
            self.es.push(it, out, self.estimate())
        self.completed = it

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
            checkpoint = self.checkpoint
            if checkpoint is not None and report and it < total and self.stop_reason is None and checkpoint.due():
                checkpoint.save(self.state(it))  # at a report: the loop syncs there anyway
            yield from _hand_over(event, self.allocator)
        if self.held is not None and cfg.early_stop and report and self.stop_reason is None:
            best_it = self.held.best_iteration
            if best_it is not None and it - best_it >= cfg.es_patience:
                self._early_stop(it, best_it, rule="validation PSNR")

    def _early_stop(self, it: int, best_it: int, rule: str | None = None) -> None:
        self.stop_reason = EarlyStop(it, best_it)
        for h in self.histories:
            h.early_stop = {"iteration": it, "best_iteration": best_it, **({"rule": rule} if rule else {})}

    def _progress(self, it: int, snapshot: bool, record: bool) -> Progress:
        """The metrics of this iteration, one per member (recorded in the histories at reports)."""
        spec = self.spec
        losses = self.current["loss"].tolist()
        fits = fit_psnrs(self.fidelity, losses, self.observed, spec.psnr_peak)
        need_host = snapshot or spec.references is not None
        host = self.to_host(self.estimate()) if need_host else None
        psnrs, ssims = [None] * len(losses), [None] * len(losses)
        if spec.references is not None:
            scores = [(host[i], ref, self.cfg.compute_ssim) for i, ref in enumerate(spec.references)]
            if len(scores) > 1:  # SSIM is ~25 ms a 512x512 member on the host while the device waits
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(min(len(scores), speed.usable_cores())) as pool:
                    scores = list(pool.map(lambda args: psnr_ssim(*args, peak=spec.psnr_peak), scores))
            else:
                scores = [psnr_ssim(*scores[0], peak=spec.psnr_peak)]
            psnrs, ssims = map(list, zip(*scores))
        vals = self.held.check(it, self.estimate()) if self.held is not None and record else None
        elapsed = time.perf_counter() - self.t0
        if record:
            for i, (h, fit, p, s) in enumerate(zip(self.histories, fits, psnrs, ssims)):
                h.iterations.append(it)
                h.fit_psnr.append(fit)
                h.psnr.append(p)
                h.ssim.append(s)
                if vals is not None:
                    h.val_psnr.append(vals[i])
        output = np.clip(host, 0, 1) if snapshot else None
        return Progress(it, self.cfg.iterations, losses, fits, psnrs, ssims, elapsed, output)

    def should_end(self, it: int) -> bool:
        """Early stop, a fit that cannot progress, or the consumer's stop request."""
        if self.stop_reason is not None:
            return True
        if self.stalled:
            guard = self.guard_
            if not any(guard.good_iteration):
                raise Diverged(
                    f"the fit diverged at {guard.MAX_FALLS} checks in a row from the starting weights: "
                    f"lr={self.cfg.lr:g} is too high for this network ({self.cfg.optimizer}); try "
                    f"lr={min(self.cfg.lr / 2, 0.01):g} or lower.")
            for h in self.histories:
                h.notes.append(f"stopped at iteration {it}: the fit diverged at {guard.MAX_FALLS} checks in a "
                               f"row from the last good weights (lr={self.cfg.lr:g} may be too high)")
            return True
        return self.stop_flag.is_set()  # set by the consumer, possibly from another thread

    def last_report(self, it: int):
        """The events of an ending run: the early stop, or a stopped run's last metrics and
        checkpoint (a stopped run can be resumed)."""
        if self.stop_reason is not None:
            yield from _hand_over(self.stop_reason, self.allocator)
            return
        if self.stalled or not self.stop_flag.is_set():
            return
        cfg = self.cfg
        report = it % cfg.report_every == 0 or it == cfg.iterations
        snapshot = bool(cfg.snapshot_every) and it % cfg.snapshot_every == 0
        event = None if report else self._progress(it, snapshot, record=True)
        if self.checkpoint is not None and it < cfg.iterations:
            self.checkpoint.save(self.state(it))
        if event is not None:
            yield from _hand_over(event, self.allocator)

    # the answer ------------------------------------------------------------------
    def estimate(self) -> torch.Tensor:
        return self.ema if self.ema is not None else self.current["out"].detach()

    def to_host(self, t: torch.Tensor) -> np.ndarray:
        if self.kept is not None:
            t = torch.where(self.kept[0], self.kept[1], t.float())
        return t[:, :, self.crop[0], self.crop[1]].float().cpu().numpy()

    def finish(self) -> EnsembleFinished:
        """The last event: the answers (best validated, ES-WMV's, the guard's or the last)."""
        total, completed = self.cfg.iterations, self.completed
        elapsed = time.perf_counter() - self.t0
        logs = self.loss_log[:completed].cpu().numpy()
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
        stopped_by_user = self.stop_flag.is_set()
        for i, h in enumerate(self.histories):
            h.loss = logs[:, i].tolist()
            if h.answer_iteration is None:
                h.answer_iteration = self.stop_reason.best_iteration if self.stop_reason else completed
            h.timings.update(optimise_s=elapsed, iterations=completed,
                             s_per_iteration=elapsed / max(completed, 1), stopped_by_user=stopped_by_user)
            gain = h.still_improving
            if gain is not None and not stopped_by_user and self.stop_reason is None and not self.stalled:
                h.notes.append(f"the fit was still improving when the {completed} iterations ran out (held-out "
                               f"PSNR +{gain:.2f} dB over the last quarter): more, e.g. "
                               f"iterations={2 * completed}, would most likely give a better answer")
        self.allocator.off()
        outputs = np.clip(self.to_host(final), 0.0, 1.0)
        average = outputs.mean(axis=0) if len(outputs) > 1 else None
        average_psnr = None
        if average is not None and self.spec.references is not None:
            average_psnr, _ = psnr_ssim(average, self.spec.references[0], with_ssim=False,
                                        peak=self.spec.psnr_peak)
        weights = None  # one copy at the end: what a neighbouring part may start from
        if self.k == 1:
            weights = {n: t.detach().to("cpu", copy=True) for n, t in self.members.module.state_dict().items()}
        return EnsembleFinished(outputs, self.histories, completed, average, average_psnr,
                                stopped_by_user and completed < total, weights=weights)

    # checkpoints -----------------------------------------------------------------
    def state(self, it: int) -> dict:
        """Everything the next iteration depends on (see checkpoint.py)."""
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        es, held, guard = self.es, self.held, self.guard_
        return {
            "fingerprint": self.spec.fingerprint, "completed": it, "elapsed": time.perf_counter() - self.t0,
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
        saved = checkpoint.load(self.spec.fingerprint, self.cfg.to_dict())
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
        self.completed = n
        self.t0 -= saved["elapsed"]  # the time already spent counts in the history
        return n

    # the process around the run ----------------------------------------------------
    @contextlib.contextmanager
    def process_settings(self):
        """Torch's process-wide settings for this run (threads, cuDNN autotuning, freed-memory
        reuse), put back after it however it ends."""
        dev, threads = self.dev, self.spec.threads
        self.allocator.on()
        threads_before = torch.get_num_threads()
        if threads:  # process-wide in torch: set for this run, put back after it
            torch.set_num_threads(threads)
        cudnn_benchmark = torch.backends.cudnn.benchmark
        if dev.type == "cuda":  # one image size for thousands of steps: pick the fastest kernels
            torch.backends.cudnn.benchmark = True
        for h in self.histories:
            h.fast_path["reuse_freed_memory"] = self.allocator.available
            h.fast_path["threads"] = threads
        try:
            yield
        finally:
            torch.set_num_threads(threads_before)
            torch.backends.cudnn.benchmark = cudnn_benchmark

    def release(self) -> None:
        """Drop every device tensor and put the process settings back."""
        for name in ("current", "members", "optimizer", "z", "z_fmt", "noise", "target", "mask_t", "loss_log",
                     "ema", "es", "guard_", "compiled", "step_graph", "held", "kept", "operator"):
            setattr(self, name, None)
        free_device_memory(self.dev)
        self.allocator.off()  # after the tensors are gone, so the trim frees them
