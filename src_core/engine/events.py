"""What a run hands out: its events as it goes, and the history of everything it measured."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Progress:
    """Metrics every ``report_every`` iterations; ``output`` only on snapshot iterations.

    ``fit_psnr`` compares the output with the observed pixels only (the
    quantity a user without ground truth can see).  ``psnr``/``ssim`` compare
    with the clean reference when one was given (scikit-image, data_range 1,
    output clipped to [0, 1]).  ``output`` is (C, H, W) float32 in [0, 1].
    In a :class:`~src_core.engine.DIPEnsemble` every metric is a list (one per member) and
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

    @classmethod
    def mean_of(cls, histories: list) -> "History":
        """One history for restarts fitted together: each curve the members' mean at each
        report; the answer's iteration the latest member's; notes and recoveries of all."""
        first = histories[0]

        def mean(name):
            rows = list(zip(*(getattr(h, name) for h in histories)))
            return [None if any(v is None for v in row) else float(np.mean(row)) for row in rows]

        its = [h.answer_iteration for h in histories if h.answer_iteration is not None]
        notes = list(dict.fromkeys(n for h in histories for n in h.notes))
        recoveries = [dict(r, member=k) if isinstance(r, dict) else r
                      for k, h in enumerate(histories) for r in h.recoveries]
        return cls(iterations=list(first.iterations), fit_psnr=mean("fit_psnr"), psnr=mean("psnr"),
                   ssim=mean("ssim"), loss=mean("loss"), val_psnr=mean("val_psnr"),
                   answer_iteration=max(its) if its else None, recoveries=recoveries,
                   early_stop=first.early_stop, timings=dict(first.timings), device=first.device,
                   fast_path=dict(first.fast_path, restarts=len(histories)), config=dict(first.config),
                   notes=notes, summary=dict(first.summary), part=first.part)

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
    #: the network's final state (CPU), for a neighbour's warm start (RunConfig.warm_start)
    weights: dict | None = field(default=None, repr=False)
    #: with ``restarts``: every restart's answer (K, C, H, W); ``output`` is their mean
    members: np.ndarray | None = field(default=None, repr=False)

    @property
    def spread(self) -> np.ndarray | None:
        """The restarts' per-pixel standard deviation (C, H, W), or None for one run: large
        where the data leave the answer open (an unbiased estimate over K members)."""
        if self.members is None or len(self.members) < 2:
            return None
        return self.members.astype(np.float64).std(axis=0, ddof=1).astype(np.float32)


@dataclass
class EnsembleFinished:
    """Last event of a DIPEnsemble: one answer and history per member, and their average."""

    outputs: np.ndarray              # (K, C, H, W)
    histories: list
    completed: int
    average: np.ndarray | None       # (C, H, W) mean of the members' answers (restarts)
    average_psnr: float | None
    stopped: bool = False
    kind: str = "finished"
    #: a one-member run's final network state (CPU; None with several members)
    weights: dict | None = field(default=None, repr=False)
