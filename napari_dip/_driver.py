"""Driving the engine for napari: a prepared problem, slice by slice, as a generator.

:class:`Driver` is what the widget's ``thread_worker`` iterates and what the
console call runs in its own thread; it never touches a layer.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

import src_core
from src_core import Finished

from ._capture import Captured

GUI_THREADS = 1  # cores left to napari's own thread by default


def run_threads(requested: int | None) -> int:
    """CPU threads for a run from napari: the count asked for, or the free cores less the GUI's."""
    return requested or src_core.speed.default_threads(reserve=GUI_THREADS)


def prepare(captured: Captured) -> src_core.Problem:
    """The engine's own checks and conversion (raises DIPError with its message)."""
    return src_core.prepare(
        captured.image, captured.mask, task=captured.task, reference=captured.reference,
        missing_fraction=captured.missing_fraction, mask_seed=captured.mask_seed,
        channel_axis=captured.channel_axis, config=captured.config,
        keep_observed=captured.keep_observed, threads=run_threads(captured.threads),
        **captured.task_options)


@dataclass
class Update:
    """One engine event, or a step of the driver's own (``kind`` 'slice': a slice starts and
    its network is being set up; 'finishing': its answer is being put together)."""

    kind: str
    position: int      # which of the slices being restored (0-based)
    count: int         # how many slices this run restores
    event: object = None
    message: str = ""


@dataclass
class Outcome:
    """What a run left: every slice (unrestored ones keep the observed input), histories."""

    output: np.ndarray | None          # (N, C, H, W) float in [0, 1]
    histories: list = field(default_factory=list)
    stopped: bool = False
    stopped_at: tuple | None = None    # (slice position, iteration) of a stop
    error: BaseException | None = None


class Driver:
    """Runs a prepared problem slice by slice as a generator of :class:`Update`.

    The generator catches every exception and returns it in the
    :class:`Outcome`: superqt's workers would otherwise swallow a RuntimeError
    (CUDA out of memory is one) as a mere warning.  :meth:`request_stop` may
    be called from any thread; it finishes the current slice after its current
    iteration (keeping the partial answer) and starts no further slice.
    """

    def __init__(self, problem: src_core.Problem):
        self.problem = problem
        self._stop = threading.Event()  # every slice's run watches it
        self._run = None

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Abandon the run now (no result) and free device memory."""
        self._stop.set()
        run = self._run
        if run is not None:
            try:
                run.close()
            except ValueError:  # still executing in the worker: the stop flag ends it
                run.request_stop()

    def _setting_up(self) -> str:
        cfg = self.problem.config
        return (f"setting up the network; the first report comes after {cfg.report_every} "
                "iterations")

    def _finishing(self) -> str:
        method = self.problem.classical
        return f"finishing: the {method} fill and the blend" if method else "finishing"

    def events(self):
        problem = self.problem
        count = problem.slices
        output = np.stack([problem.placeholder(i) for i in range(count)])  # a copy: unrestored slices
        histories = []
        stopped_at = finished = None
        solving = problem.solve(stop=self._stop)
        try:
            for kind, position, payload in ([] if self._stop.is_set() else solving):
                if kind == "start":
                    self._run = payload
                    yield Update("slice", position, count, message=self._setting_up())
                elif kind == "event" and isinstance(payload, Finished):
                    finished = payload  # reported once its answer is put together
                    yield Update("finishing", position, count, message=self._finishing())
                elif kind == "event":
                    yield Update(payload.kind, position, count, payload)
                elif kind == "answer":
                    self._run = None
                    output[position] = payload[0]
                    histories.append(payload[1])
                    if finished.stopped:
                        stopped_at = (position, finished.completed)
                    yield Update(finished.kind, position, count, finished)
        except Exception as exc:  # reported to the user by the main thread
            return Outcome(None, histories, error=exc)
        finally:
            solving.close()  # closes the running slice's run, if any
            self._run = None
        stopped = self._stop.is_set() and (stopped_at is not None or len(histories) < count)
        if stopped and stopped_at is None:
            last = histories[-1].timings.get("iterations", 0) if histories else 0
            stopped_at = (len(histories) - 1, last)
        return Outcome(output, histories, stopped=stopped, stopped_at=stopped_at)

    def run_here(self, on_update=None) -> Outcome:
        """Drive the whole run in the calling thread (scripting, synchronous tests)."""
        events = self.events()
        while True:
            try:
                update = next(events)
            except StopIteration as done:
                return done.value
            if on_update is not None:
                on_update(update)


def describe_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
