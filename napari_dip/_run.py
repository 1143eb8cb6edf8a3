"""One restoration run started from napari: its worker, its layers and its Activity entry.

Shared by the dock widget and the console call, so both run the same way: the
layers are captured and checked on the main thread (bad input fails before
any work); the engine's own checks and conversion (seconds for a large image)
and the run itself go to a ``thread_worker`` (or the calling thread), and each
update reaches the layers, napari's Activity dock (cancelable: Cancel there is
Stop) and the caller's own callback on the main thread.  The run's layers are
made when the prepared problem arrives, so a run refused by the engine touches
no layer.
"""

from __future__ import annotations

import time
from functools import partial

from napari.qt.threading import thread_worker
from napari.utils import cancelable_progress

from src_core import Progress

from ._capture import Captured
from ._driver import Driver, Outcome, Update
from ._layers import OutputLayers, finale


#: napari's Activity entry moves on at most this often: each of its updates processes the
#: window's events and repaints it (84 ms a call, median, at 1366x768 under Xvfb), with the GIL
#: held, so a progress report every 10 iterations of a 64x64 stack made the run itself 1.5x
#: slower in napari than from the API (benchmarks/time_model_widget.py, docs/benchmarks.md)
ACTIVITY_EVERY_S = 2.0


def _pause_activity_animation(viewer) -> None:
    """Pause napari's "in progress" animation (a GIF in its status bar) while a run computes
    (nothing where this napari has none where it is looked for).

    Each frame repaints napari's window, and where OpenGL is done in software (a virtual
    display, a remote desktop, a VM: llvmpipe) that repaint is CPU work: 9 CPU-seconds of a
    31-second run on two cores, which made the run itself 1.4-1.8x slower in napari than from
    the API (benchmarks/time_model_widget.py, docs/benchmarks.md).  The entry and its Cancel
    stay; only the animation holds still.  napari stops it when its last entry closes, and
    starts it again for the next."""
    try:
        movie = viewer.window._qt_window._activity_dialog._toggleButton._inProgressIndicator.movie()
        movie.setPaused(True)
    except (AttributeError, RuntimeError, TypeError):  # another napari, or a closed window
        pass


class _Activity(cancelable_progress):
    """napari's cancelable progress, whose Cancel acts at once: the stock one only calls
    back from inside a loop over it, and a run's progress is set by hand."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class LayerRun:
    """A started (or startable) run over captured layers.

    ``result`` is the result layer once the run has ended well; ``outcome``
    the driver's :class:`~napari_dip._driver.Outcome`; ``worker`` napari's
    worker while threaded (connect to ``worker.finished`` to hear the end);
    ``problem``, ``outputs`` and ``total`` once the problem is prepared (call
    :meth:`prepare` to do that here, and raise on bad input, before starting).
    ``on_update(update)`` and ``on_done(run)`` are called on the main thread.
    """

    def __init__(self, viewer, captured: Captured, *, live: bool = True,
                 keep_earlier: bool = False, extra_layers: bool = False, on_update=None, on_done=None):
        self.viewer = viewer
        self.captured = captured
        self.live, self.keep_earlier = live, keep_earlier
        self.extra_layers = extra_layers  # the iteration stack and the curve picture as layers too
        self.driver = Driver(captured, preview=live)
        self.problem = None  # the whole image (a tiled run's too), once prepared
        self.outputs: OutputLayers | None = None
        self.iterations = captured.config.iterations
        self.total = 0  # iterations of every slice or tile that runs, once prepared
        # the iterations of the first n parts (see _count_work)
        self._iterations_before = partial(captured.config.stack_iterations, warm=False)
        self.on_update, self.on_done = on_update, on_done
        self.worker = None
        self.activity = None
        self.outcome: Outcome | None = None
        self.result = None
        self.finish_error: BaseException | None = None
        self.abandoned = False
        self.done = False
        self.step_shown = False  # the Activity entry shows a step's message, not the run's name
        self._activity_at = -float("inf")  # when the Activity entry last moved on

    def prepare(self) -> None:
        """The engine's checks and conversion, here and now (raises DIPError)."""
        self.driver.prepare()
        self._count_work()

    def _count_work(self) -> None:
        self.problem = self.driver.problem
        config = self.problem.config
        self.iterations = config.iterations
        warm = not self.driver.remote and not self.driver.tiled  # a stack here: later slices may start warm
        self._iterations_before = partial(config.stack_iterations, warm=warm)
        self.total = self._iterations_before(self.driver.count)

    # ------------------------------------------------------------------ control
    def start(self, threaded: bool = True):
        """Run in a worker thread (returns the worker) or here, to the end (returns None)."""
        self.activity = _Activity(total=self.total, desc=f"DIP {self.captured.source.name}",
                                            cancel_callback=self.stop)
        _pause_activity_animation(self.viewer)
        if not threaded:
            self._on_outcome(self.driver.run_here(self._on_update))
            self._on_finished()
            return None
        worker = thread_worker(self._work, start_thread=False)()
        worker.yielded.connect(self._on_update)
        worker.returned.connect(lambda returned: self._on_outcome(*returned))
        worker.aborted.connect(self.driver.close)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def _work(self):
        """The worker's generator: the driver's updates, then (outcome, its :func:`finale`)."""
        outcome = yield from self.driver.events()
        try:
            made = None if self.abandoned else finale(self.captured, self.driver.problem, outcome,
                                                      self.driver.unit, picture=self.extra_layers)
        except Exception:  # made again on the main thread, which reports the error
            made = None
        return outcome, made

    def stop(self) -> None:
        """End after the current iteration, keeping the partial result."""
        self.driver.request_stop()

    def abandon(self) -> None:
        """End without adding any layer (the panel or the viewer closed)."""
        self.abandoned = True
        if self.outputs is not None:
            self.outputs.remove_preview()
        self.driver.request_stop()
        if self.worker is not None:
            self.worker.quit()

    @property
    def stop_requested(self) -> bool:
        return self.driver.stop_requested

    @property
    def arrived(self) -> int:
        """Slices or tiles finished so far (counted by the layers, which show each)."""
        return 0 if self.outputs is None else self.outputs.arrived

    # ------------------------------------------------------------------ main-thread slots
    def done_iterations(self, update: Update) -> int:
        """Iterations done so far (a cluster's slices count whole as they arrive)."""
        if update.kind == "finished" or not isinstance(update.event, Progress):
            return self._iterations_before(self.arrived)
        return self._iterations_before(update.position) + update.event.iteration

    def _on_prepared(self, first_plane) -> None:
        """The problem is ready: the run's layers (the preview shows ``first_plane``)."""
        self._count_work()
        try:
            self.outputs = OutputLayers(self.viewer, self.captured, self.problem, live=self.live,
                                        keep_earlier=self.keep_earlier, remote=self.driver.remote,
                                        first_plane=first_plane, extra_layers=self.extra_layers)
        except Exception as exc:  # reported by on_done; the run has nowhere to show itself
            self.finish_error = exc
            self.driver.request_stop()
            return
        if self.activity is not None:
            self.activity.total = self.total

    def _on_update(self, update: Update) -> None:
        if self.abandoned:
            return
        if update.kind == "prepared":
            self._on_prepared(update.event)
        elif self.outputs is not None:
            self.outputs.on_update(update)
        if self.on_update is not None:
            self.on_update(update)
        # last: napari's Activity dock may process events, and so handle the next updates inside
        # this call; they must come after this one's, or an older status would show last
        if self.activity is not None:
            name = f"DIP {self.captured.source.name}"
            if isinstance(update.event, Progress) or (update.kind == "finished" and self.driver.remote):
                now = time.monotonic()
                if now - self._activity_at < ACTIVITY_EVERY_S and update.kind != "finished":
                    return  # napari redraws its window at each call: see ACTIVITY_EVERY_S
                self._activity_at = now
                if self.step_shown:  # the step's message ("setting up...") is over
                    self.activity.set_description(name)
                    self.step_shown = False
                    if self.activity is None:  # the run finished in the events that call handled
                        return
                self.activity.update(self.done_iterations(update) - self.activity.n)
            elif update.message:
                self.activity.set_description(f"{name}: {update.message}")
                self.step_shown = True

    def _on_outcome(self, outcome: Outcome, made=None) -> None:
        self.outcome = outcome
        if self.abandoned or self.outputs is None:  # or refused before any layer was made
            return
        try:
            self.result = self.outputs.finish(outcome, made)
        except Exception as exc:  # reported by on_done like an engine error
            self.finish_error = exc

    def _on_finished(self) -> None:
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        self.worker = None
        self.done = True
        if self.on_done is not None:
            self.on_done(self)
