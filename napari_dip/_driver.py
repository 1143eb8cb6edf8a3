"""Driving the engine for napari: a captured run, prepared and then slice by slice, as a generator.

:class:`Driver` is what the widget's ``thread_worker`` iterates and what the
console call runs in its own thread; it never touches a layer.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace

import numpy as np

import src_core
from src_core import Finished

from ._capture import Captured

GUI_THREADS = 1  # cores left to napari's own thread by default


def run_threads(requested: int | None) -> int:
    """CPU threads for a run from napari: the count asked for, or the free cores less the GUI's."""
    return requested or src_core.speed.default_threads(reserve=GUI_THREADS)


def prepare(captured: Captured):
    """The engine's own checks and conversion (raises DIPError with its message): a
    :class:`src_core.Problem`, or a :class:`src_core.TiledProblem` when the region is tiles."""
    settings = dict(task=captured.task, reference=captured.reference, channel_axis=captured.channel_axis,
                    config=captured.config, keep_observed=captured.keep_observed,
                    missing_fraction=captured.missing_fraction, mask_seed=captured.mask_seed,
                    threads=run_threads(captured.threads), **captured.task_options)
    if captured.tile is not None:
        return src_core.TiledProblem.prepare(captured.image, captured.mask, tile=captured.tile, **settings)
    return src_core.prepare(captured.image, captured.mask, **settings, **captured.volume)


def user_plane(problem, chw: np.ndarray) -> np.ndarray:
    """One engine slice in the input's dtype and layout, for display."""
    return problem.scaling.from_unit(problem.slice_to_user_float(chw))


def starting_plane(problem, position: int) -> np.ndarray:
    """What a slice shows before its first output: the observed pixels (a super-resolution
    slice: its placeholder at the answer's size), for display."""
    if problem.operator.factor == 1:
        return user_plane(problem, problem.images[position] * problem.masks[position])
    return user_plane(problem, problem.placeholder(position))


@dataclass
class Update:
    """One engine event, or a step of the driver's own (``kind`` 'prepared': the problem is
    ready, ``event`` the preview's first plane; 'slice': a slice starts and its network is
    being set up; 'finishing': its answer is being put together; 'cluster': connecting to a
    Dask cluster, or the work was sent there; 'classical': ``event`` is slice 0's classical
    fill, (C, H, W) in [0, 1], before its network starts)."""

    kind: str
    position: int      # which of the slices (or tiles) being restored (0-based)
    count: int         # how many slices (or tiles) this run restores
    event: object = None
    message: str = ""
    unit: str = "slice"
    tile: tuple | None = None  # a finished tile: (slice, rows, columns, (C, h, w) answer) of the whole stack


@dataclass
class Outcome:
    """What a run left: every slice (unrestored ones keep the observed input), histories."""

    output: np.ndarray | None          # (N, C, H, W) float in [0, 1]
    histories: list = field(default_factory=list)
    stopped: bool = False
    stopped_at: tuple | None = None    # (slice position, iteration) of a stop
    error: BaseException | None = None
    spread: np.ndarray | None = None   # with restarts: (N, C, H, W) in [0, 1] units (NaN: not run)


class Driver:
    """Runs a captured run's slices (or a large image's tiles) as a generator of :class:`Update`.

    The generator first prepares the problem (in the worker: a large image's
    conversion would hold napari's main thread) and says so in a 'prepared'
    update, which carries the preview's first plane.  It catches every
    exception and returns it in the :class:`Outcome`: superqt's workers would
    otherwise swallow a RuntimeError (CUDA out of memory is one) as a mere warning.  :meth:`request_stop` may
    be called from any thread; it finishes the current slice after its current
    iteration (keeping the partial answer) and starts no further slice.  With
    the captured ``scheduler`` address or ``client``, the slices or tiles run on that
    Dask cluster and each arrives when it finishes (a stop keeps those that
    finished and cancels the others, whose work is lost).
    """

    def __init__(self, captured: Captured, preview: bool = True, start: dict | None = None,
                 classical_first: bool = False):
        self.captured = captured
        self.preview = preview  # the 'prepared' update carries the preview's first plane
        self.start = start  # the first slice's starting weights (a warm start), or None
        #: before the network starts, a 'classical' update with the classical fill of slice 0 (the
        #: answer computes it anyway, so it costs nothing more): live healing shows it at once
        self.classical_first = classical_first
        self.weights = None  # the last finished slice's network weights (a one-network run's)
        self.work = self.problem = None     # set by prepare()
        self.tiled = captured.tile is not None
        self.unit = "tile" if self.tiled else "slice"
        self.count = 0                      # slices or tiles that run, once prepared
        self.scheduler = captured.scheduler or None
        self.client = captured.client
        self._stop = threading.Event()  # every slice's run watches it
        self._run = None

    def prepare(self) -> None:
        """The engine's checks and conversion (raises DIPError); the worker does it unless the
        caller did (the console call does, so that bad input raises there)."""
        if self.work is not None:
            return
        work = prepare(self.captured)
        self.problem = work.whole if self.tiled else work  # the whole image, in the layers' terms
        self.count = len(work.parts) if self.tiled else work.slices
        self.work = work

    @property
    def warnings(self) -> list:
        """What the engine's checks warned of (non-finite pixels, no validation), once prepared;
        a tiled run's tiles too, each said once."""
        if self.work is None:
            return []
        said = list(self.problem.warnings)
        for _, part in (self.work.parts if self.tiled else []):
            said += part.warnings
        return list(dict.fromkeys(said))

    @property
    def remote(self) -> bool:
        """The work runs on a Dask cluster (its parts report only when they finish)."""
        return self.client is not None or self.scheduler is not None

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

    def _update(self, kind, position, event=None, message="", tile=None) -> Update:
        return Update(kind, position, self.count, event, message, self.unit, tile)

    def events(self):
        histories = {}  # by position: a cluster's answers arrive in any order
        spreads = {}    # by position, with restarts
        stopped_at = finished = None
        own = solving = None
        try:
            self.prepare()
            problem, count = self.problem, self.count
            yield self._update("prepared", 0, starting_plane(problem, 0) if self.preview else None)
            output = np.empty((problem.slices, *problem.operator.output_shape(problem.images.shape[1:])),
                              np.float32)
            order = {index: k for k, (index, _) in enumerate(self.work.parts)} if self.tiled else None
            client = self.client
            if client is None and self.scheduler is not None:
                yield self._update("cluster", 0, message=f"connecting to the Dask scheduler {self.scheduler}")
                client = own = src_core.connect(self.scheduler)
            if client is not None:
                yield self._update("cluster", 0, message=f"{count} {self.unit}(s) sent to the cluster; each "
                                   "arrives when it finishes")
            if self.classical_first and not self.tiled and problem.classical is not None:
                yield self._update("classical", 0, problem.classical_answer(0)[0],
                                   message=f"the {problem.classical} fill, while the network starts")
            solving = self.work.solve(stop=self._stop, client=client, start=self.start)
            for kind, index, payload in ([] if self._stop.is_set() else solving):
                position = order[index] if self.tiled and index in order else index
                if kind == "start":
                    self._run = payload
                    yield self._update("slice", position, message=self._setting_up())
                elif kind == "event" and isinstance(payload, Finished):
                    finished = payload  # reported once its answer is put together
                    self.weights = payload.weights
                    yield self._update("finishing", position, message=self._finishing())
                elif kind == "event":
                    if self.tiled and getattr(payload, "output", None) is not None:
                        payload = replace(payload, output=None)  # a tile's frames are not the image's
                    yield self._update(payload.kind, position, payload)
                elif kind == "answer":
                    self._run = None
                    answer, history = payload.answer, payload.history
                    if payload.spread is not None:
                        spreads[position] = payload.spread
                    tile = None
                    if self.tiled:
                        tile = (index // len(self.work.tiles), *self.work.span(index), answer)
                    else:
                        output[position] = answer
                    histories[position] = history
                    if finished is None:  # from the cluster: the answer is all there is
                        finished = Finished(answer, history, history.timings.get("iterations", 0))
                    if finished.stopped:
                        stopped_at = (position, finished.completed)
                    yield self._update(finished.kind, position, finished, tile=tile)
                    finished = None
            if self.tiled:
                output, _, spread = self.work.blend()
            else:
                spread = problem.stacked_spread(spreads)
                for i in sorted(set(range(count)) - set(histories)):
                    output[i] = problem.placeholder(i)  # not restored: the input (read only now)
        except Exception as exc:  # reported to the user by the main thread
            return Outcome(None, [histories[i] for i in sorted(histories)], error=exc)
        finally:
            if solving is not None:
                solving.close()  # closes the running slice's run (or the cluster's tasks), if any
            if own is not None:
                own.close()
            self._run = None
        ordered = [histories[i] for i in sorted(histories)]
        stopped = self._stop.is_set() and (stopped_at is not None or len(histories) < count)
        if stopped and stopped_at is None:  # after the last slice that finished (none: before the first)
            last = max(histories, default=-1)
            stopped_at = (last, histories[last].timings.get("iterations", 0) if histories else 0)
        return Outcome(output, ordered, stopped=stopped, stopped_at=stopped_at, spread=spread)

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
