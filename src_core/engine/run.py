"""The runs a caller iterates: :class:`DIPEnsemble` (K networks fitted together) and
:class:`DIPRun` (one), both generators of events over a :class:`~src_core.engine.loop.Fit`."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from ..checkpoint import Checkpoint
from ..config import RunConfig
from ..fidelity import Fidelity
from ..operators import Operator
from ..errors import DIPError
from .events import EnsembleFinished, Finished, History, Progress
from .loop import Fit
from .spec import RunSpec, build_spec, check_chw, check_mask

if TYPE_CHECKING:
    from ..problem import Problem


class DIPEnsemble:
    """K independent Deep Image Prior fits optimised together, in one pass.

    ``images``: (K, C, H, W) float in [0, 1] (several images of one size, or
    the same image K times for restarts); ``masks``: bool, True = observed,
    (K, C|1, H, W) or broadcastable; ``references``: optional clean images;
    ``seeds``: one per member (default ``config.seed + k``).  Events carry
    one value per member; the final event also holds the average of the
    members' answers (the paper reports that averaging restarts raises PSNR).

    Adam only; early stopping is per run (use DIPRun).

    ``validation``: observed pixels held out of the loss (True = held out,
    shaped like ``masks``, disjoint from them).  Their score, recorded at
    every report, estimates the answer's quality without ground truth; the
    answer is the estimate at the best validation report, and
    ``config.early_stop`` stops when it has not improved for
    ``es_patience`` iterations (instead of ES-WMV).  ``keep_observed``: the
    answer equals the image wherever it was observed (mask or validation),
    so only the missing pixels come from the network.  ``psnr_peak``: the range every PSNR
    counts as its peak (1: all of [0, 1]; a problem scaled with headroom above its data, as
    deconvolution is, passes its data's share, so its PSNRs mean what they mean elsewhere).
    ``fidelity``: the data term (:mod:`src_core.fidelity`; default the MSE).

    Everything is checked when it is made (:func:`~src_core.engine.spec.build_spec`); the
    networks are built on the first ``next()``.  While it runs, :attr:`fit` is the loop that
    holds its state (read-only from outside).
    """

    def __init__(self, images, masks=None, config: RunConfig | None = None, references=None,
                 seeds: list[int] | None = None, strategy: str = "auto", validation=None,
                 keep_observed: bool = False, stop: threading.Event | None = None,
                 threads: int | None = None, checkpoint: Checkpoint | None = None,
                 operator: Operator | None = None, psnr_peak: float = 1.0, fidelity: Fidelity | None = None,
                 start: dict | None = None):
        self.spec: RunSpec = build_spec(images, masks, config, references, seeds, strategy, validation,
                                        keep_observed, threads, operator, psnr_peak, fidelity,
                                        checkpointed=checkpoint is not None, start=start)
        self.checkpoint = checkpoint
        self._stop = stop if stop is not None else threading.Event()
        self.fit: Fit | None = None
        self._events = self._loop()

    @property
    def config(self) -> RunConfig:
        return self.spec.config

    # generator protocol -------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        return next(self._events)

    def _loop(self):
        self.fit = Fit(self.spec, self.checkpoint, self._stop)
        yield from self.fit.events()

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
    def completed(self) -> int:
        """Iterations done so far (kept after the run ends or is closed)."""
        return 0 if self.fit is None else self.fit.completed

    @property
    def network(self):
        """The live generator while a one-member run computes (None before and after)."""
        return None if self.fit is None else self.fit.network

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint

    @property
    def fast_path(self) -> dict:
        return self.spec.fast_path

    @property
    def memory_needed(self) -> int:
        return self.spec.memory_needed


class DIPRun:
    """One Deep Image Prior optimisation, iterated as events: an ensemble of one.

    ``image``: (C, H, W) float in [0, 1], finite.  ``mask``: bool, True =
    observed, of shape (H, W), (1, H, W) or (C, H, W).  ``reference``: clean
    (C, H, W) image for true PSNR/SSIM, optional.

    Iterate to run; ``close()`` stops at once and frees device memory;
    ``request_stop()`` finishes after the current step with the partial
    answer.  The network is built lazily, on the first ``next()``, so
    construction only checks the input (and the memory it will need).

    ```pycon
    >>> import numpy as np
    >>> from src_core import DIPRun, preset, bernoulli_mask
    >>> img = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    >>> cfg = preset("cpu", scales=2, down_channels=8, up_channels=8, iterations=4, report_every=2)
    >>> events = list(DIPRun(img, bernoulli_mask((32, 32), 0.5), cfg))
    >>> [e.kind for e in events]
    ['progress', 'progress', 'finished']

    ```
    """

    #: the prepared Problem this run is slice 0 of, when iterate() made it (its scaling and layout)
    problem: Problem | None = None

    def __init__(self, image: np.ndarray, mask: np.ndarray | None = None,
                 config: RunConfig | None = None, reference: np.ndarray | None = None,
                 validation: np.ndarray | None = None, keep_observed: bool = False,
                 stop: threading.Event | None = None, threads: int | None = None,
                 checkpoint: Checkpoint | None = None, operator: Operator | None = None,
                 psnr_peak: float = 1.0, fidelity: Fidelity | None = None, start: dict | None = None):
        image = check_chw(image, "image")
        if mask is not None:
            mask = check_mask(mask, image.shape)[None]
        if reference is not None:
            reference = check_chw(reference, "reference")[None]
        config = (config or RunConfig()).validate()
        k = self.restarts = config.restarts

        def members(a):  # the same data for every restart
            return None if a is None else np.repeat(np.asarray(a)[None], k, axis=0)

        if k > 1 and start is not None:
            raise DIPError("a warm start gives one network its weights; restarts begin from their own seeds "
                           "(use restarts=1 to start from a neighbour's weights).")
        self.ensemble = DIPEnsemble(members(image), None if mask is None else np.repeat(mask, k, axis=0),
                                    config, None if reference is None else np.repeat(reference, k, axis=0),
                                    seeds=[config.seed + i for i in range(k)], validation=members(validation),
                                    keep_observed=keep_observed, stop=stop, threads=threads,
                                    checkpoint=checkpoint, operator=operator, psnr_peak=psnr_peak,
                                    fidelity=fidelity, start=start)

    def __iter__(self):
        return self

    def __next__(self):
        event = next(self.ensemble)
        if self.restarts > 1:
            return _as_one_run(event)
        if isinstance(event, Progress):
            return Progress(event.iteration, event.total, event.loss[0], event.fit_psnr[0], event.psnr[0],
                            event.ssim[0], event.elapsed, None if event.output is None else event.output[0])
        if isinstance(event, EnsembleFinished):
            return Finished(event.outputs[0], event.histories[0], event.completed, event.stopped,
                            weights=event.weights)
        return event

    def run(self):
        """Run to the end and return the final event."""
        last = None
        for event in self:
            last = event
        return last

    def close(self) -> None:
        self.ensemble.close()

    def request_stop(self) -> None:
        self.ensemble.request_stop()

    # what the ensemble of one has and is
    spec = property(lambda self: self.ensemble.spec)
    config = property(lambda self: self.ensemble.config)
    fit = property(lambda self: self.ensemble.fit)
    completed = property(lambda self: self.ensemble.completed)
    network = property(lambda self: self.ensemble.network)
    fingerprint = property(lambda self: self.ensemble.fingerprint)
    fast_path = property(lambda self: self.ensemble.fast_path)
    memory_needed = property(lambda self: self.ensemble.memory_needed)


def _as_one_run(event):
    """A restarts ensemble's event as one run's: the members' mean output and mean metrics,
    the members themselves kept on the last event (their disagreement is the spread)."""
    if isinstance(event, Progress):
        def mean(values):
            return None if any(v is None for v in values) else float(np.mean(values))

        return Progress(event.iteration, event.total, mean(event.loss), mean(event.fit_psnr), mean(event.psnr),
                        mean(event.ssim), event.elapsed, None if event.output is None else event.output.mean(axis=0))
    if isinstance(event, EnsembleFinished):
        return Finished(event.average, History.mean_of(event.histories), event.completed, event.stopped,
                        members=event.outputs)
    return event
