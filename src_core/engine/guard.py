"""The destabilisation guard: a fit that falls sharply goes back to its last good check."""

from __future__ import annotations

import math

import torch

from ..config import RunConfig
from ..fidelity import MSE, Fidelity
from .members import Members
from .metrics import fit_psnrs


class Guard:
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

    def __init__(self, cfg: RunConfig, members: Members, observed, fidelity: Fidelity | None = None,
                 peak: float = 1.0):
        self.cfg = cfg
        self.fidelity = fidelity or MSE()  # the fit figure is read through the data term
        self.peak = peak  # see DIPEnsemble's psnr_peak
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
        return fit_psnrs(self.fidelity, losses, self.observed, self.peak)

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
