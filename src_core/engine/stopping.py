"""When a run has its answer: the held-out pixels' best iterate, and ES-WMV's window."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import RunConfig
from ..fidelity import MSE, Fidelity
from ..operators import Operator


class HeldOut:
    """Held-out observed pixels: a no-reference estimate of quality, and the best answer so far.

    The squared error on the held-out pixels is computed on the device at
    report iterations only (one read per report, no extra sync).  Each
    member keeps a device copy of its estimate at its best validation PSNR.
    """

    def __init__(self, image: torch.Tensor, mask_np: np.ndarray, operator: Operator, peak: float = 1.0,
                 fidelity: Fidelity | None = None):
        self.operator = operator
        self.fidelity = fidelity or MSE()  # held-out pixels are scored by the run's own data term
        self.peak = peak  # see DIPEnsemble's psnr_peak
        self.mask_np = mask_np
        self.mask = torch.from_numpy(mask_np.astype(np.float32)).to(image.device)
        self.target = image * self.mask
        self.count = self.mask.sum(dim=(1, 2, 3)).clamp(min=1)
        self.best = None
        self.best_psnr = [-math.inf] * mask_np.shape[0]
        self.best_its = [None] * mask_np.shape[0]

    def check(self, it: int, estimate: torch.Tensor) -> list[float]:
        est = estimate.detach().float().clamp(0, 1)
        scores = self.fidelity.held_out(self.operator.apply(est), self.target, self.mask, self.count)
        psnrs = [self.fidelity.held_out_psnr(v, self.peak) for v in scores.tolist()]
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


class WindowVariance:
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
