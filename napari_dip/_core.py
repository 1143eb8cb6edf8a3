"""Between napari layers and the engine, shared by the dock widget and the scripting call.

Three steps, none of which needs a Qt widget:

* :func:`capture` checks the layers the user picked and copies what a run
  needs, so editing layers during a run cannot disturb it (and nothing the
  user owns is ever written to);
* :class:`Driver` runs the engine slice by slice as a generator of
  :class:`Update` s; it is what the ``thread_worker`` iterates, and it never
  touches a layer;
* :class:`OutputLayers` turns updates into layers on the main thread: one
  preview updated in place, a stack of intermediate outputs with an
  ``iteration`` axis, the PSNR curve rendered as an image layer, and the final
  result with the input's dtype, scale, translate and axis labels.

Mask convention: in a napari Labels layer the painted pixels are the ones to
fill; the engine's masks are True = observed (``src_core.mask_from_labels``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

import src_core
from src_core import DIPError, Finished, Progress, RunConfig

TASKS = ("inpaint", "random", "denoise")
ROLE_KEY = "napari_dip"                           # our output layers: metadata[ROLE_KEY] = role
MASK_FOR_KEY = "napari_dip_mask_for"              # a Labels layer made for image <name>
REFERENCE_FOR_KEY = "napari_dip_reference_for"    # the clean version of image <name>
GUI_THREADS = 1                                   # cores left to napari's own thread by default


# ----------------------------------------------------------------------------- capture

@dataclass
class Source:
    """What output layers copy from the input layer (taken when the run starts)."""

    name: str
    ndim: int                       # napari dims of the layer (channels of RGB excluded)
    rgb: bool
    dtype: np.dtype
    scale: tuple
    translate: tuple
    axis_labels: tuple
    units: tuple | None
    contrast_limits: tuple | None
    colormap: object | None

    @property
    def stack_ndim(self) -> int:
        return self.ndim - 2

    def plane_kwargs(self) -> dict:
        """Placement of a 2D (Y, X) layer over the source's last two axes."""
        kwargs = dict(scale=self.scale[-2:], translate=self.translate[-2:],
                      axis_labels=self.axis_labels[-2:])
        if self.units is not None:
            kwargs["units"] = self.units[-2:]
        return kwargs

    def look_kwargs(self) -> dict:
        """Same contrast and colours as the source, so outputs compare at a glance."""
        kwargs = {}
        if self.contrast_limits is not None:
            kwargs["contrast_limits"] = self.contrast_limits
        if self.colormap is not None and not self.rgb:
            kwargs["colormap"] = self.colormap
        return kwargs


@dataclass
class Captured:
    """Copies of everything one run reads: arrays, settings and the source's geometry."""

    source: Source
    image: np.ndarray
    mask: np.ndarray | None           # engine convention: True = observed
    reference: np.ndarray | None
    task: str
    config: RunConfig
    missing_fraction: float = 0.5
    mask_seed: int = 0
    slice_index: tuple | None = None  # stack position when only the current slice runs
    mask_name: str | None = None
    reference_name: str | None = None
    threads: int | None = None         # CPU threads; None: the free cores less one for the GUI
    keep_observed: bool | None = None  # None: the engine's default (on, except for denoising)

    @property
    def channel_axis(self):
        return -1 if self.source.rgb else None


def _layer_source(layer) -> Source:
    units = getattr(layer, "units", None)
    return Source(
        name=str(layer.name), ndim=int(layer.ndim), rgb=bool(getattr(layer, "rgb", False)),
        dtype=np.dtype(layer.dtype) if hasattr(layer, "dtype") else np.asarray(layer.data).dtype,
        scale=tuple(float(s) for s in layer.scale),
        translate=tuple(float(t) for t in layer.translate),
        axis_labels=tuple(str(a) for a in layer.axis_labels),
        units=None if units is None else tuple(units),
        contrast_limits=tuple(layer.contrast_limits) if hasattr(layer, "contrast_limits") else None,
        colormap=getattr(layer, "colormap", None),
    )


def _plain_data(layer, what: str) -> np.ndarray:
    if getattr(layer, "multiscale", False):
        raise DIPError(f"{what} '{layer.name}' is a multiscale (pyramid) layer; open the full-"
                       "resolution level as a plain image layer to restore it.")
    return layer.data


def current_index(viewer, layer) -> tuple:
    """The data index of the layer's stack axes at the viewer's current position."""
    n_stack = layer.ndim - 2
    if n_stack <= 0:
        return ()
    point = layer.world_to_data(viewer.dims.point)
    shape = np.shape(layer.data)
    return tuple(int(np.clip(round(float(point[i])), 0, shape[i] - 1)) for i in range(n_stack))


def capture(image_layer, mask_layer=None, reference_layer=None, *, task: str = "inpaint",
            label: int | None = None, config: RunConfig, slice_index: tuple | None = None,
            missing_fraction: float = 0.5, mask_seed: int = 0, threads: int | None = None,
            keep_observed: bool | None = None) -> Captured:
    """Check the chosen layers against each other and copy what the run needs.

    ``slice_index``: restore only this stack position (``None``: every slice).
    Raises :class:`src_core.DIPError` with a message naming the layers; the
    layers themselves are only read.
    """
    if image_layer is None:
        raise DIPError("no image layer: open an image (or File > Open Sample > napari-dip) "
                       "and choose it as the image to restore.")
    if task not in TASKS:
        raise DIPError(f"task must be one of {TASKS} (got {task!r}).")
    for layer, what in ((image_layer, "image"), (reference_layer, "reference")):
        kind = type(layer).__name__
        if layer is not None and kind != "Image":
            raise DIPError(f"the {what} '{getattr(layer, 'name', layer)}' is a {kind} layer; choose an "
                           f"Image layer as the {what}.")
    source = _layer_source(image_layer)
    data = _plain_data(image_layer, "image")
    shape = tuple(np.shape(data))
    plane = shape[-3:-1] if source.rgb else shape[-2:]
    no_channel = shape[:-1] if source.rgb else shape
    stack_shape = no_channel[:-2]
    if slice_index is not None and not stack_shape:
        slice_index = None  # a 2D image has one slice: "current" and "all" are the same
    if slice_index is not None and len(slice_index) != len(stack_shape):
        raise DIPError(f"slice index {slice_index} does not fit the stack axes {stack_shape} "
                       f"of '{source.name}'.")

    def take(array):
        """The captured part of an array laid out like the image (copied)."""
        if slice_index is None:
            return np.array(array)
        return np.array(array[tuple(slice_index)])

    mask = mask_name = None
    if task == "random":
        mask_layer = None  # the engine draws its own Bernoulli mask
    if task == "inpaint" and mask_layer is None:
        raise DIPError("inpainting needs a mask: choose a Labels layer with the damaged region "
                       "painted (painted = to fill), or make a random mask.")
    if mask_layer is not None:
        mask_name = str(mask_layer.name)
        labels = _plain_data(mask_layer, "mask")
        mshape = tuple(np.shape(labels))
        fits = mshape in (no_channel, plane) or (source.rgb and mshape == shape)
        if not fits:
            per_slice = f", one per slice {no_channel}" if stack_shape else ""
            reverse = ""
            if len(mshape) > len(no_channel) and not source.rgb:
                reverse = (f" The mask has more dimensions than the image; a mask with channels "
                           f"only fits an RGB image.")
            raise DIPError(
                f"mask '{mask_name}' has shape {mshape} but image '{source.name}' has shape "
                f"{shape}: the mask must be {plane} (applied to every slice and channel"
                f"{per_slice}).{reverse}")
        mdtype = np.dtype(getattr(labels, "dtype", np.asarray(labels).dtype))
        if mdtype.kind not in "biu":
            raise DIPError(f"mask '{mask_name}' must hold integer labels (got {mdtype}); "
                           "use a Labels layer (painted = to fill).")
        if slice_index is not None and mshape != plane:
            labels = labels[tuple(slice_index)]
        labels = np.asarray(labels)
        observed = src_core.mask_from_labels(labels, label or None)  # a new array
        painted = int(observed.size - np.count_nonzero(observed))
        if task == "inpaint" and painted == 0:
            which = f" with label {label}" if label else ""
            raise DIPError(
                f"mask '{mask_name}' has no painted pixels{which}"
                f"{' in this slice' if slice_index is not None else ''}: paint the damaged "
                "region (painted = to fill), or make a random mask.")
        if painted == observed.size:
            raise DIPError(f"mask '{mask_name}' covers every pixel: nothing is left to learn "
                           "from. Paint only the damaged region.")
        mask = observed

    reference = reference_name = None
    if reference_layer is not None:
        reference_name = str(reference_layer.name)
        ref = _plain_data(reference_layer, "reference")
        if tuple(np.shape(ref)) != shape:
            raise DIPError(
                f"reference '{reference_name}' has shape {tuple(np.shape(ref))} but image "
                f"'{source.name}' has shape {shape}; the reference must be the clean version "
                "of the same image.")
        reference = take(ref)

    return Captured(source=source, image=take(data), mask=mask, reference=reference, task=task,
                    threads=threads, keep_observed=keep_observed,
                    config=config, missing_fraction=float(missing_fraction),
                    mask_seed=int(mask_seed),
                    slice_index=None if slice_index is None else tuple(slice_index),
                    mask_name=mask_name, reference_name=reference_name)


def run_threads(requested: int | None) -> int:
    """CPU threads for a run from napari: the count asked for, or the free cores less the GUI's."""
    return requested or src_core.speed.default_threads(reserve=GUI_THREADS)


def prepare(captured: Captured) -> src_core.Problem:
    """The engine's own checks and conversion (raises DIPError with its message)."""
    return src_core.prepare(
        captured.image, captured.mask, task=captured.task, reference=captured.reference,
        missing_fraction=captured.missing_fraction, mask_seed=captured.mask_seed,
        channel_axis=captured.channel_axis, config=captured.config, keep_observed=captured.keep_observed,
        threads=run_threads(captured.threads))


def fits_image(config: RunConfig, plane: tuple) -> str | None:
    """A warning when the network cannot take an image of this (H, W), else None."""
    return config.network.size_problem(*plane)


def image_plane(layer) -> tuple:
    shape = np.shape(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)
    return tuple(shape[-3:-1] if getattr(layer, "rgb", False) else shape[-2:])


def random_mask_labels(layer, missing_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Labels (1 = to fill) with a random ``missing_fraction`` of each plane painted."""
    shape = np.shape(layer.data)
    no_channel = shape[:-1] if getattr(layer, "rgb", False) else shape
    observed = src_core.bernoulli_mask(no_channel, missing_fraction, seed)
    return (~observed).astype(np.uint8)


# ----------------------------------------------------------------------------- driving the engine

@dataclass
class Update:
    """One engine event (or ``kind='slice'`` when a slice starts), with its place in the run."""

    kind: str
    position: int      # which of the slices being restored (0-based)
    count: int         # how many slices this run restores
    event: object = None


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
        self._stop = False
        self._run = None

    def request_stop(self) -> None:
        self._stop = True
        run = self._run
        if run is not None:
            run.request_stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def close(self) -> None:
        """Abandon the run now (no result) and free device memory."""
        self._stop = True
        run = self._run
        if run is not None:
            try:
                run.close()
            except ValueError:  # still executing in the worker: the stop flag ends it
                run.request_stop()

    def events(self):
        problem = self.problem
        count = problem.slices
        output = problem.images.copy()
        histories = []
        stopped_at = None
        try:
            for position in range(count):
                if self._stop:
                    break
                run = problem.run(position)
                self._run = run
                if self._stop:
                    run.request_stop()
                yield Update("slice", position, count)
                for event in run:
                    if isinstance(event, Finished):
                        output[position] = problem.answer(position, event)
                        event.history.notes.extend(problem.notes)
                        histories.append(event.history)
                        if event.stopped:
                            stopped_at = (position, event.completed)
                    yield Update(event.kind, position, count, event)
                self._run = None
        except Exception as exc:  # reported to the user by the main thread
            return Outcome(None, histories, error=exc)
        finally:
            if self._run is not None:
                self._run.close()
                self._run = None
        stopped = self._stop and (stopped_at is not None or len(histories) < count)
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


# ----------------------------------------------------------------------------- curves

BACKGROUND, FOREGROUND = "#262930", "#d0d4dc"  # napari's dark theme


def _dark_axes(fig, ax) -> None:
    """napari's dark theme colours, so the plot sits well in the viewer."""
    fig.patch.set_facecolor(BACKGROUND)
    ax.set_facecolor(BACKGROUND)
    for spine in ax.spines.values():
        spine.set_color("#5a626c")
    ax.tick_params(colors=FOREGROUND, labelsize=7)
    ax.xaxis.label.set_color(FOREGROUND)
    ax.yaxis.label.set_color(FOREGROUND)
    ax.title.set_color(FOREGROUND)
    ax.grid(alpha=0.25)


def draw_curves(fig, ax, curves: list, title: str = "") -> None:
    """Draw PSNR curves, one entry per slice: (label, iterations, psnr list, fit list).

    With a reference (any psnr value not None) the true PSNR is the solid line
    and the fit on observed pixels is dashed; without one only the fit is drawn.
    """
    ax.clear()
    has_ref = any(any(v is not None for v in psnr) for _, _, psnr, _ in curves)
    for label, its, psnr, fit in curves:
        suffix = f" {label}" if label else ""
        if has_ref:
            y = np.array([np.nan if v is None else v for v in psnr], dtype=float)
            line, = ax.plot(its, y, linewidth=1.4, label=f"PSNR vs reference{suffix}")
            ax.plot(its, fit, linewidth=0.9, linestyle="--", color=line.get_color(), alpha=0.6,
                    label=f"fit (observed){suffix}")
        else:
            ax.plot(its, fit, linewidth=1.4, label=f"fit PSNR (observed pixels){suffix}")
    ax.set_xlabel("iteration", fontsize=8)
    ax.set_ylabel("PSNR (dB)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    _dark_axes(fig, ax)
    if any(len(c[1]) for c in curves) and len(curves) <= 4:
        ax.legend(fontsize=6, loc="lower right", facecolor=BACKGROUND, edgecolor="#5a626c",
                  labelcolor=FOREGROUND, framealpha=0.6)


class LiveCurves:
    """The widget's PSNR plot, redrawn incrementally: new points move the existing lines.

    Clearing and rebuilding the axes (and their layout) at every update took
    most of the main thread's time per update; only a change in the set of
    curves (a new slice, the first reference value) rebuilds them now.
    """

    def __init__(self, fig, ax):
        self.fig, self.ax = fig, ax
        self.shape = None
        self.lines: list = []

    def update(self, curves: list) -> None:
        has_ref = any(any(v is not None for v in psnr) for _, _, psnr, _ in curves)
        shape = (has_ref, tuple(label for label, *_ in curves))
        if shape != self.shape:
            draw_curves(self.fig, self.ax, curves)
            try:
                self.fig.tight_layout()
            except Exception:  # tight_layout may fail on a tiny canvas; the plot is still fine
                pass
            self.shape, self.lines = shape, list(self.ax.get_lines())
            return
        series = []
        for _, its, psnr, fit in curves:
            if has_ref:
                series.append((its, [np.nan if v is None else v for v in psnr]))
            series.append((its, fit))
        for line, (x, y) in zip(self.lines, series):
            line.set_data(x, y)
        self.ax.relim()
        self.ax.autoscale_view()


def render_curves(curves: list, title: str = "", size=(4.0, 3.0), dpi=100) -> np.ndarray:
    """The curves as an RGB uint8 image (Agg, no display and no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    draw_curves(fig, ax, curves, title)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ----------------------------------------------------------------------------- output layers

class OutputLayers:
    """Turns a run's updates into napari layers; call only on the main thread.

    ``live=True`` keeps a preview layer updated in place (at most every
    ``preview_every_s`` seconds; removed when the result arrives).  The main
    thread's work per update stays small whatever the run length:
    intermediate outputs (every ``snapshot_every`` iterations) are only
    collected during the run and become a stack layer with an ``iteration``
    axis once, at the end, as does the PSNR curve (a rendered image layer to
    the right of the image); the widget draws the live curve itself.
    """

    preview_every_s = 0.25

    def __init__(self, viewer, captured: Captured, problem: src_core.Problem, live: bool = True):
        self.viewer = viewer
        self.captured = captured
        self.problem = problem
        self.live = live
        self.source = captured.source
        self.curves: dict[int, dict] = {}
        self.frames: list[np.ndarray] = []
        self.frame_tags: list[tuple] = []
        self.preview = self.stack = self.curve_layer = None
        self.position = 0
        self._preview_at = -math.inf
        name = self.source.name
        if captured.task == "random":
            corrupted = problem.corrupted()
            viewer.add_image(
                self._place_like_source(corrupted), name=f"{name} DIP input "
                f"({captured.missing_fraction:.0%} missing)", **self._source_kwargs(),
                metadata={ROLE_KEY: "input"})
        if live:
            first = self._user_plane(problem.images[0] * problem.masks[0])
            self.preview = viewer.add_image(first, name=f"{name} DIP preview",
                                            rgb=self.source.rgb, **self.source.plane_kwargs(),
                                            **self.source.look_kwargs(),
                                            metadata={ROLE_KEY: "preview"})

    # conversions ---------------------------------------------------------------
    def _user_plane(self, chw: np.ndarray) -> np.ndarray:
        """One engine slice in the input's dtype and layout, for display."""
        return self.problem.scaling.from_unit(self.problem.slice_to_user_float(chw))

    def _source_kwargs(self) -> dict:
        s = self.source
        kwargs = dict(rgb=s.rgb, scale=s.scale, translate=self._translate(),
                      axis_labels=s.axis_labels, **self.source.look_kwargs())
        if s.units is not None:
            kwargs["units"] = s.units
        return kwargs

    def _translate(self) -> tuple:
        """The source's translate, moved to the slice when only one slice was restored."""
        s = self.source
        if self.captured.slice_index is None:
            return s.translate
        t = list(s.translate)
        for axis, index in enumerate(self.captured.slice_index):
            t[axis] += index * s.scale[axis]
        return tuple(t)

    def _place_like_source(self, data: np.ndarray) -> np.ndarray:
        if self.captured.slice_index is None:
            return data
        return data[(np.newaxis,) * len(self.captured.slice_index)]

    # updates -------------------------------------------------------------------
    def curve_list(self) -> list:
        many = len(self.curves) > 1 or self.problem.slices > 1
        return [(f"slice {p + 1}" if many else "", c["iterations"], c["psnr"], c["fit"])
                for p, c in sorted(self.curves.items())]

    def on_update(self, update: Update) -> None:
        self.position = update.position
        if update.kind == "slice":
            self.curves[update.position] = {"iterations": [], "psnr": [], "fit": []}
            return
        event = update.event
        if isinstance(event, Progress):
            curve = self.curves.setdefault(update.position,
                                           {"iterations": [], "psnr": [], "fit": []})
            if not curve["iterations"] or curve["iterations"][-1] < event.iteration:
                curve["iterations"].append(event.iteration)
                curve["psnr"].append(event.psnr)
                curve["fit"].append(event.fit_psnr)
            if event.output is not None:
                self.add_frame(update.position, event.iteration, event.output)

    def add_frame(self, position: int, iteration: int, chw: np.ndarray) -> None:
        plane = self._user_plane(chw)
        now = time.monotonic()
        if self.preview is not None and now - self._preview_at >= self.preview_every_s:
            self.preview.data = plane  # in place: same layer, new pixels
            self._preview_at = now
        self.frames.append(plane)
        self.frame_tags.append((position, iteration))

    def _add_stack(self) -> None:
        """The collected intermediate outputs as one layer with an iteration axis."""
        if not self.frames:
            return
        meta = {ROLE_KEY: "iterations", "iterations": [t[1] for t in self.frame_tags],
                "slices": [t[0] for t in self.frame_tags]}
        kw = self.source.plane_kwargs()
        kw["scale"] = (1.0, *kw["scale"])
        kw["translate"] = (0.0, *kw["translate"])
        kw["axis_labels"] = ("iteration", *kw["axis_labels"])
        if "units" in kw:
            kw["units"] = ("pixel", *kw["units"])
        self.stack = self.viewer.add_image(
            np.stack(self.frames), name=f"{self.source.name} DIP iterations", rgb=self.source.rgb,
            visible=False, metadata=meta, **kw, **self.source.look_kwargs())
        self.frames = []  # the stack layer holds them now

    def update_curve_layer(self, title: str = "") -> None:
        curves = self.curve_list()
        if not any(len(c[1]) for c in curves):
            return
        rgb = render_curves(curves, title or f"{self.source.name}: PSNR")
        s = self.source
        (h, w) = self.problem.layout.spatial_shape
        factor = h * s.scale[-2] / rgb.shape[0]
        scale = (factor, factor)
        translate = (s.translate[-2], s.translate[-1] + w * s.scale[-1] * 1.04)
        if self.curve_layer is None:
            self.curve_layer = self.viewer.add_image(
                rgb, name=f"{s.name} DIP PSNR curve", rgb=True, scale=scale, translate=translate,
                axis_labels=s.axis_labels[-2:], metadata={ROLE_KEY: "curve"})
        else:
            self.curve_layer.data = rgb

    # the end ---------------------------------------------------------------------
    def finish(self, outcome: Outcome):
        """Add the result layer (partial when stopped); returns it, or None on error."""
        if self.preview is not None and outcome.error is None:
            if self.preview in self.viewer.layers:
                self.viewer.layers.remove(self.preview)
            self.preview = None
        if outcome.error is not None or outcome.output is None:
            return None
        self._add_stack()
        problem = self.problem
        data = self._place_like_source(problem.to_user(outcome.output))
        name = f"{self.source.name} DIP"
        if outcome.stopped:
            position, iteration = outcome.stopped_at
            if problem.slices > 1:
                name += (f" (stopped at slice {position + 1}/{problem.slices}, "
                         f"iteration {iteration})")
            else:
                name += f" (stopped at {iteration})"
        histories = [h.to_dict() for h in outcome.histories]
        metadata = {
            ROLE_KEY: "result",
            "history": histories[0] if histories else None,
            "histories": histories,
            "task": self.captured.task,
            "config": problem.config.to_dict(),
            "notes": list(problem.notes),
            "stopped": outcome.stopped,
            "source": self.source.name,
            "mask": self.captured.mask_name,
            "reference": self.captured.reference_name,
            "slice_index": self.captured.slice_index,
        }
        layer = self.viewer.add_image(data, name=name, metadata=metadata, **self._source_kwargs())
        # the final curves come from the histories (every report, not only live ones)
        self.curves = {i: {"iterations": h.iterations, "psnr": h.psnr, "fit": h.fit_psnr}
                       for i, h in enumerate(outcome.histories)}
        self.update_curve_layer()
        if self.curve_layer is not None:
            self.curve_layer.metadata.update({ROLE_KEY: "curve", "histories": histories})
        return layer


def describe_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
