"""Live healing: while it is on, each change to the mask layer restores the box around it.

A change (a paint stroke, an erase, a fill, an undo: the Labels layer's ``paint`` and
``data`` events) is read once the mask has been still for ``pause_ms`` (a stroke of many
events is one change): the pixels it changed join those waiting to be healed, and the box
around them (with the context the network needs) runs as a region run with the panel's
settings.  Its classical fill shows at once, then DIP's previews and its answer, in place in
one layer over the image (``<image> DIP live``, which starts as the image).  A change while
a run is in flight stops that run (its box waits again, with the new change) and the next
run starts when it has ended, so two runs never share the cores.  A run whose box overlaps
the last one's starts from that run's weights: the preset's ``warm_start`` share of its
iterations (docs/results/live).  Painting never waits on a run: on the main thread there
is one comparison of the mask per pause and a paste per preview.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QObject, QTimer

from src_core import DIPError, Progress, get_task

from ._capture import _layer_source
from ._driver import Driver, user_plane
from ._layers import NAMED_KEY, ROLE_KEY

#: how long the mask must be still before its change runs (a stroke is many paint events)
PAUSE_MS = 400
#: with a time budget on, a live run fits this many seconds at most (the panel's budget is for Run)
LIVE_BUDGET_S = 15.0
#: a preview is pasted into the live layer at most this often
PASTE_EVERY_S = 0.25


def _boxes_overlap(a, b) -> bool:
    return all(min(x.stop, y.stop) > max(x.start, y.start) for x, y in zip(a, b))


def live_config(captured, seconds: float, threads):
    """A live change's settings: the count that fits its box in at most LIVE_BUDGET_S of the
    ``seconds`` asked, from what this machine has measured (made on napari's main thread, so
    nothing is calibrated here: the panel's background calibration measures)."""
    from ._scripting import fitted_config

    return fitted_config(captured, get_task(captured.task), min(seconds, LIVE_BUDGET_S), threads, measure=False)


def start_live(viewer, image_layer, mask_layer, capture_around, *, threaded: bool = True,
               pause_ms: int = PAUSE_MS, on_status=None) -> "LiveHealing":
    """Check that live healing can work on these layers (raises DIPError), add the live layer
    (a copy of the image, just above it, so the mask stays on top and stays the layer painted
    on) and start healing."""
    if image_layer is None or mask_layer is None:
        raise DIPError("live healing needs an image layer and a Labels mask layer to paint on.")
    rgb = bool(getattr(image_layer, "rgb", False))
    shape = np.shape(image_layer.data)
    plane = tuple(shape[-3:-1] if rgb else shape[-2:])
    if len(shape) != (3 if rgb else 2):
        raise DIPError(f"live healing works on a 2D image; '{image_layer.name}' is a stack {shape}. Restore its "
                       "slices with Run (slices: current or all).")
    if tuple(np.shape(mask_layer.data)) != plane:
        raise DIPError(f"live healing needs a mask of the image's plane {plane}; '{mask_layer.name}' is "
                       f"{tuple(np.shape(mask_layer.data))}.")
    source = _layer_source(image_layer)
    name = f"{image_layer.name} DIP live"
    for layer in [la for la in viewer.layers if la.metadata.get(ROLE_KEY) == "live"
                  and la.metadata.get("source") == image_layer.name and la.metadata.get(NAMED_KEY) == la.name]:
        viewer.layers.remove(layer)  # an earlier live session's layer, still as we named it
    layer = viewer.add_image(np.array(image_layer.data), name=name, rgb=rgb, scale=tuple(image_layer.scale),
                             translate=tuple(image_layer.translate), axis_labels=tuple(image_layer.axis_labels),
                             metadata={ROLE_KEY: "live", "source": image_layer.name, NAMED_KEY: name},
                             **source.look_kwargs())
    layers = viewer.layers
    layers.move(layers.index(layer), layers.index(image_layer) + 1)
    layers.selection.active = mask_layer  # painting goes on where it was
    live = LiveHealing(viewer, image_layer, mask_layer, capture_around,
                       plane_labels=lambda: np.array(mask_layer.data), threaded=threaded, pause_ms=pause_ms,
                       on_status=on_status)
    live.start(layer)
    return live


class LiveHealing(QObject):
    """Heal the changes to ``mask_layer`` as they come (see the module docstring).

    ``capture_around(changed)``: the :class:`~napari_dip._capture.Captured` region run
    around the True pixels of ``changed`` (H, W), with the settings to run (raises
    DIPError on bad input). ``on_status(text, error)`` hears what happens.  ``threaded=False``
    runs each run in the calling thread, at once (tests).  :meth:`stop` ends it all.
    ``timings``: per finished run, when (``time.perf_counter()``) the change was read, its first
    result shown (the classical fill), its first DIP preview and its answer; its box and
    whether it started warm.
    """

    def __init__(self, viewer, image_layer, mask_layer, capture_around, *, plane_labels,
                 threaded: bool = True, pause_ms: int = PAUSE_MS, on_status=None):
        super().__init__()
        self.viewer, self.image_layer, self.mask_layer = viewer, image_layer, mask_layer
        self.capture_around = capture_around
        self.plane_labels = plane_labels  # () -> the mask's labels of the plane being healed (a copy)
        self.threaded = threaded
        self.on_status = on_status or (lambda text, error=False: None)
        self.active = False
        self.layer = None
        self.seen = None            # the labels as last read
        self.waiting = None         # (H, W) bool: changed pixels not healed yet
        self.driver = self.worker = None
        self.box = None             # the running run's (rows, columns)
        self.captured = None
        self.cancelled = False
        self.last = None            # (box, network settings, weights) of the last run that ended
        self.timings: list[dict] = []
        self.histories: list = []
        self._read_at = time.perf_counter()  # when the mask was last read (a run's times count from it)
        self._pasted_at = -np.inf
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(pause_ms))
        self.timer.timeout.connect(self.settle)

    # ---------------------------------------------------------------- on and off
    def start(self, layer) -> None:
        """Listen to the mask; ``layer`` (the live layer, made by the caller like the source) is
        where results go.  What is painted already is healed first."""
        self.layer = layer
        # the mask as outlines while live, so the healed pixels show under it (put back at stop)
        self._contour = self.mask_layer.contour
        self.mask_layer.contour = max(2, self._contour)
        labels = self.plane_labels()
        self.seen = labels
        self.waiting = labels != 0
        self.active = True
        for event in (self.mask_layer.events.paint, self.mask_layer.events.data):
            event.connect(self.changed)
        self.timer.start()

    def stop(self) -> None:
        """Stop listening and stop the run in flight (its result is not shown); safe twice."""
        if not self.active:
            return
        self.active = False
        self.timer.stop()
        try:
            self.mask_layer.contour = self._contour
        except (AttributeError, RuntimeError):  # the layer is gone
            pass
        for event in (self.mask_layer.events.paint, self.mask_layer.events.data):
            try:
                event.disconnect(self.changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        if self.driver is not None:
            self.cancelled = True
            self.driver.request_stop()
        self.on_status("Live healing is off.", False)

    @property
    def running(self) -> bool:
        return self.driver is not None

    # ---------------------------------------------------------------- changes
    def changed(self, event=None) -> None:
        """A paint event: (re)start the pause; nothing else on the main thread."""
        if self.active:
            self.timer.start()

    def settle(self) -> None:
        """The mask has been still for the pause: read what changed, and heal it."""
        if not self.active:
            return
        labels = self.plane_labels()
        if labels.shape != self.seen.shape:
            self.waiting = np.ones(labels.shape, bool)  # a new mask array: heal all of it again
        else:
            self.waiting |= labels != self.seen
        self.seen = labels
        self._read_at = time.perf_counter()
        if not self.waiting.any():
            return
        if self.running:  # the next run starts when this one has ended
            self.cancelled = True
            self.driver.request_stop()
            self.on_status("The mask changed: stopping the run in flight to heal the new change...", False)
            return
        self.next_run()

    def next_run(self) -> None:
        """Start the run for the pixels waiting (or paste the image back where none is painted)."""
        if not self.active or self.running or not self.waiting.any():
            return
        try:
            captured = self.capture_around(self.waiting.copy())
        except DIPError as exc:
            self.waiting[:] = False
            self.on_status(str(exc), True)
            return
        if captured.region is None:  # a box of most of the image: all of it
            captured.region = tuple(slice(0, n) for n in self.waiting.shape)
        rows, cols = captured.region
        self.waiting[rows, cols] = False
        if bool(np.asarray(captured.mask).all()):  # nothing painted in the box: the image as it was
            self._paste(captured, captured.image)
            self.next_run()
            return
        network = captured.config.network.to_dict()
        warm = (self.last is not None and self.last[1] == network and self.last[2] is not None
                and captured.config.restarts == 1 and _boxes_overlap(self.last[0], captured.region))
        self.captured, self.box, self.cancelled = captured, captured.region, False
        self.driver = Driver(captured, preview=False, start=self.last[2] if warm else None, classical_first=True)
        self.timing = {"box": [rows.stop - rows.start, cols.stop - cols.start], "warm": warm,
                       "region": [[rows.start, rows.stop], [cols.start, cols.stop]],
                       "iterations": captured.config.warm_iterations() if warm else captured.config.iterations,
                       "read_at": self._read_at}
        self.on_status(f"Healing the {rows.stop - rows.start}x{cols.stop - cols.start} box around the change"
                       f"{' (from the last run)' if warm else ''}...", False)
        if not self.threaded:
            self.ended(self.driver.run_here(self.shown))
            return
        from napari.qt.threading import thread_worker

        worker = thread_worker(self.driver.events, start_thread=False)()
        worker.yielded.connect(self.shown)
        worker.returned.connect(self.ended)
        self.worker = worker
        worker.start()

    # ---------------------------------------------------------------- results
    def shown(self, update) -> None:
        """An update of the run in flight (main thread): its classical fill, then DIP's previews."""
        if self.cancelled or self.driver is None:
            return
        event = update.event
        if update.kind == "classical":
            self._paste(self.captured, user_plane(self.driver.problem, event))
            self.timing.setdefault("first_at", time.perf_counter())
        elif isinstance(event, Progress) and event.output is not None:
            now = time.perf_counter()
            if now - self._pasted_at >= PASTE_EVERY_S:
                self._paste(self.captured, user_plane(self.driver.problem, event.output))
                self._pasted_at = now
                self.timing.setdefault("first_at", now)
                self.timing.setdefault("first_dip_at", now)

    def ended(self, outcome) -> None:
        """The run in flight ended (main thread): show its answer, or wait its box again if it
        was stopped for a newer change; then the next run."""
        driver, box = self.driver, self.box
        self.driver = self.worker = None
        if driver is None:
            return
        self.last = (box, self.captured.config.network.to_dict(), driver.weights)
        if self.cancelled or outcome.stopped:
            if self.active:
                self.waiting[box[0], box[1]] = True
        elif outcome.error is not None:
            self.on_status(f"live healing: {outcome.error}", True)
        else:
            self._paste(self.captured, user_plane(driver.problem, outcome.output[0]))
            self.histories = [*self.histories, *outcome.histories][-20:]
            self.timing["final_at"] = time.perf_counter()
            self.timing["final_s"] = self.timing["final_at"] - self.timing["read_at"]
            self.timings.append(self.timing)
            h = outcome.histories[0] if outcome.histories else None
            said = ""
            if h is not None and h.summary.get("blend_alpha") is not None:
                said = f" (DIP's weight {h.summary['blend_alpha']:.2f})"
            self.on_status(f"Healed the {box[0].stop - box[0].start}x{box[1].stop - box[1].start} box in "
                           f"{self.timing['final_s']:.1f} s{said}; paint on, or turn live off.", False)
        self.cancelled = False
        if self.active:
            self.next_run()

    def _paste(self, captured, plane) -> None:
        """The box's pixels (the input's dtype) into the live layer, in place."""
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return
        layer.data[captured.plane_index()] = plane
        layer.refresh()
