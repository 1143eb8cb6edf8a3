"""A run's layers: built from the driver's updates, on the main thread only.

A run adds its result layer (and, while it runs, a preview; on request, the
iteration stack and the curve picture).  A new run of the same source replaces
the layers of an earlier run whose result is of the same kind (task and slice)
and shape, unless asked to keep them; a layer the user renamed is theirs and
always kept, so names never pile up napari's ``[1]``, ``[2]`` suffixes.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import dataclass

import numpy as np

import src_core
from src_core import Progress

from ._capture import Captured
from ._curves import render_curves
from ._driver import Outcome, Update, starting_plane, user_plane

ROLE_KEY = "napari_dip"        # our output layers: metadata[ROLE_KEY] = role
ROLES = ("input", "preview", "iterations", "curve", "result", "spread")
NAMED_KEY = "napari_dip_named"  # the name we gave; a layer renamed since is the user's


@contextlib.contextmanager
def _removing(viewer):
    """Remove layers without a long stall: napari's canvas collects all garbage after each
    removal (0.25 s and more in a process holding torch, dask and napari), and once for a batch.
    The objects already there are frozen meanwhile, so that collection looks only at young ones;
    the removed layers' own cycles go at Python's next full collection (their GL resources
    are closed by napari before it collects)."""
    batched = getattr(viewer.layers, "batched_update", None)
    freeze = gc.get_freeze_count() == 0  # never unfreeze what someone else froze
    if freeze:
        gc.freeze()
    try:
        with batched() if batched is not None else contextlib.nullcontext():
            yield
    finally:
        if freeze:
            gc.unfreeze()


RUN_KEY = "napari_dip_run"     # the layers one run added share this id


def earlier_outputs(viewer, source_name: str) -> list:
    """The layers earlier runs of this source left, still under the names we gave them."""
    return [layer for layer in viewer.layers
            if layer.metadata.get(ROLE_KEY) in ROLES
            and layer.metadata.get("source") == source_name
            and layer.metadata.get(NAMED_KEY) == layer.name]


def result_shape(captured: Captured, factor: int = 1) -> tuple:
    """The shape of the result layer a run of ``captured`` adds (before it runs)."""
    shape = list(np.shape(captured.full_image))
    for axis in ((-3, -2) if captured.source.rgb else (-2, -1)):
        shape[axis] *= factor
    return (*(1,) * len(captured.slice_index or ()), *shape)


def replaced_by(viewer, captured: Captured, factor: int = 1) -> list:
    """The layers a new run replaces: those of each earlier run of the same source whose result
    is of the same kind (task and slice) and shape, and those of runs that left no result (a
    preview or stack of a run that failed); never a result of another kind, such as a whole
    stack's when one slice runs."""
    kind = (captured.task, tuple(captured.slice_index or ()))
    shape = result_shape(captured, factor)
    runs: dict = {}
    for layer in earlier_outputs(viewer, captured.source.name):
        runs.setdefault(layer.metadata.get(RUN_KEY), []).append(layer)
    out = []
    for layers in runs.values():
        results = [layer for layer in layers if layer.metadata.get(ROLE_KEY) == "result"]
        same = all((r.metadata.get("task"), tuple(r.metadata.get("slice_index") or ())) == kind
                   and tuple(np.shape(r.data)) == shape for r in results)
        if same:
            out += layers
    return out


def place_like_source(captured: Captured, data: np.ndarray, leading: int = 0) -> np.ndarray:
    """Captured data with the source's stack axes (length 1 when one slice ran), after
    ``leading`` axes of its own (the iteration axis)."""
    if captured.slice_index is None:
        return data
    return data[(*(slice(None),) * leading, *(np.newaxis,) * len(captured.slice_index))]


def curve_of(history) -> dict:
    """A finished slice's or tile's curve, from its history (every report, not only live ones)."""
    return {"iterations": list(history.iterations), "psnr": list(history.psnr), "fit": list(history.fit_psnr)}


def curves_by_position(histories: list) -> dict:
    """The curves of finished slices or tiles, by their position in the run."""
    return {i if h.part is None else h.part: curve_of(h) for i, h in enumerate(histories)}


def labelled_curves(curves: dict, unit: str, slices: int) -> list:
    """(label, iterations, psnr, fit) per curve, for drawing; labelled when there are several."""
    many = len(curves) > 1 or slices > 1
    return [(f"{unit} {p + 1}" if many else "", c["iterations"], c["psnr"], c["fit"])
            for p, c in sorted(curves.items())]


@dataclass
class Finale:
    """A finished run's result pixels and curve picture, made in the worker: for a 4096x4096
    image the conversion and the drawing held napari's main thread about 0.4 s at the end."""

    data: np.ndarray                 # the answer in the input's dtype, pasted and placed like the source
    curves: dict                     # :func:`curves_by_position`
    curve_image: np.ndarray | None   # RGB, or None when there is no curve point
    spread: np.ndarray | None = None  # the restarts' spread in the image's units, placed like ``data``


def finale(captured: Captured, problem, outcome: Outcome, unit: str, picture: bool = True) -> Finale | None:
    """What :meth:`OutputLayers.finish` shows, computed anywhere but touching no layer
    (None when the run left no answer); ``picture``: draw the curve picture too."""
    if outcome.error is not None or outcome.output is None:
        return None
    data = place_like_source(captured, captured.paste(problem.to_user(outcome.output)))
    curves = curves_by_position(outcome.histories)
    listed = labelled_curves(curves, unit, problem.slices)
    image = (render_curves(listed, f"{captured.source.name}: PSNR") if picture and any(len(c[1]) for c in listed)
             else None)
    spread = None
    if outcome.spread is not None:  # zero outside a region: the run left those pixels as they were
        spread = place_like_source(captured, captured.paste(
            problem.spread_to_user(outcome.spread), np.zeros(np.shape(captured.full_image), np.float32)))
    return Finale(data, curves, image, spread)


class OutputLayers:
    """Turns a run's updates into napari layers; call only on the main thread.

    ``live=True`` keeps a preview layer updated in place (at most every
    ``preview_every_s`` seconds; removed when the result arrives).  The main
    thread's work per update stays small whatever the run length:
    intermediate outputs (every ``snapshot_every`` iterations) are only
    collected during the run and become one stack layer at the end, with an
    ``iteration`` axis of its own in front of the source's stack (Z/T) axes;
    the PSNR curve becomes an image layer to the right of the image once, at
    the end (the widget draws the live curve itself).
    """

    preview_every_s = 0.25

    def __init__(self, viewer, captured: Captured, problem: src_core.Problem, live: bool = True,
                 keep_earlier: bool = False, remote: bool = False, first_plane: np.ndarray | None = None,
                 extra_layers: bool = False):
        self.viewer = viewer
        self.captured = captured
        self.problem = problem
        self.live = live
        self.extra_layers = extra_layers  # also the iteration stack and the curve picture
        self.source = captured.source
        self.curves: dict[int, dict] = {}
        self.frames: list[tuple] = []          # (slice position, iteration, plane)
        self.preview = self.stack = self.curve_layer = self.spread = None
        self.position = 0
        self.unit = "slice"  # or "tile": what the curves are of
        self.remote = remote  # the parts run on a cluster: no live preview, only their answers
        self.arrived = 0
        self._preview_at = -math.inf
        self._preview_slice = 0  # the slice a tiled stack's preview shows
        self.factor = problem.operator.factor  # the answer's pixels are this much smaller
        self.run_id = f"{time.time_ns():x}"
        if not keep_earlier:
            mine = {self.source.name, captured.mask_name, captured.reference_name}
            earlier = [layer for layer in replaced_by(viewer, captured, self.factor) if layer.name not in mine]
            if earlier:
                with _removing(viewer):
                    for layer in earlier:
                        viewer.layers.remove(layer)
        name = self.source.name
        if captured.task == "random":
            self._add("input", self._place_like_source(problem.corrupted()),
                      f"{name} DIP input ({captured.missing_fraction:.0%} missing)",
                      **self._source_kwargs(cropped=True))
        if live:  # the preview starts as ``first_plane``, made in the worker (Driver's 'prepared')
            self.preview = self._add("preview", first_plane, f"{name} DIP preview",
                                     rgb=self.source.rgb, **captured.placed(stack=False, factor=self.factor),
                                     **self.source.look_kwargs())

    # layers ---------------------------------------------------------------------
    def _free_name(self, base: str) -> str:
        taken = {layer.name for layer in self.viewer.layers}
        if base not in taken:
            return base
        k = 2
        while f"{base} (run {k})" in taken:
            k += 1
        return f"{base} (run {k})"

    def _add(self, role: str, data, base: str, metadata: dict | None = None, **kwargs):
        name = self._free_name(base)
        meta = {**(metadata or {}), ROLE_KEY: role, "source": self.source.name, NAMED_KEY: name,
                RUN_KEY: self.run_id}
        return self.viewer.add_image(data, name=name, metadata=meta, **kwargs)

    # conversions ---------------------------------------------------------------
    def _user_plane(self, chw: np.ndarray) -> np.ndarray:
        return user_plane(self.problem, chw)

    def _source_kwargs(self, cropped: bool, factor: int = 1) -> dict:
        return dict(rgb=self.source.rgb, **self.captured.placed(stack=True, cropped=cropped, factor=factor),
                    **self.source.look_kwargs())

    def _place_like_source(self, data: np.ndarray, leading: int = 0) -> np.ndarray:
        return place_like_source(self.captured, data, leading)

    # updates -------------------------------------------------------------------
    def curve_list(self) -> list:
        return labelled_curves(self.curves, self.unit, self.problem.slices)

    def on_update(self, update: Update) -> None:
        self.position = update.position
        self.unit = update.unit
        if update.kind == "finished":
            self._on_arrival(update)
            return
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

    def _on_arrival(self, update: Update) -> None:
        """A slice or tile finished: its whole curve; and, where no live preview showed it (a
        tile, or a slice from a cluster), its answer in the preview (a tile in its place).
        Not for the last one, whose result layer comes next: a preview changed just before
        it is removed stalls napari's main thread (about 0.7 s measured, against 0.15 s)."""
        history = update.event.history
        self.curves[update.position] = curve_of(history)
        self.arrived += 1
        live = update.tile is None and not self.remote
        if self.preview is None or live or self.arrived >= update.count:
            return
        if update.tile is not None:
            at, rows, cols, chw = update.tile
            if at != self._preview_slice:  # a tile of the next slice: the preview shows that slice now
                self.preview.data = starting_plane(self.problem, at)
                self._preview_slice = at
            data = np.array(self.preview.data)
            data[rows, cols] = self._user_plane(chw)
            self.preview.data = data
        else:
            self.preview.data = self._user_plane(update.event.output)
        self._preview_at = time.monotonic()

    def add_frame(self, position: int, iteration: int, chw: np.ndarray) -> None:
        plane = self._user_plane(chw)
        now = time.monotonic()
        if self.preview is not None and now - self._preview_at >= self.preview_every_s:
            self.preview.data = plane  # in place: same layer, new pixels
            self._preview_at = now
        if self.extra_layers:
            self.frames.append((position, iteration, plane))

    def _stack_data(self) -> tuple[np.ndarray, list]:
        """(iteration, *stack axes, plane) array of the frames, and its iterations.  A slice
        without a frame at some iteration shows its latest earlier one (or its input)."""
        iterations = sorted({0, *(it for _, it, _ in self.frames)})  # 0: where each slice started
        row = {it: i for i, it in enumerate(iterations)}
        first = self._user_plane(self.problem.placeholder(0))
        count = self.problem.slices
        data = np.empty((len(iterations), count, *first.shape), dtype=first.dtype)
        have = np.zeros((len(iterations), count), dtype=bool)
        for position, it, plane in self.frames:
            data[row[it], position] = plane
            have[row[it], position] = True
        for position in range(count):
            latest = starting_plane(self.problem, position)
            for i in range(len(iterations)):
                if have[i, position]:
                    latest = data[i, position]
                else:
                    data[i, position] = latest
        stack_shape = self.problem.layout.stack_shape if self.captured.slice_index is None else ()
        data = data.reshape(len(iterations), *stack_shape, *first.shape)
        return self._place_like_source(data, leading=1), iterations

    def _add_stack(self) -> None:
        """The collected intermediate outputs as one layer with an iteration axis in front."""
        if not self.frames:
            return
        data, iterations = self._stack_data()
        kw = self.captured.placed(stack=True, factor=self.factor)
        kw["scale"] = (1.0, *kw["scale"])
        kw["translate"] = (float(iterations[0]) if len(iterations) else 0.0, *kw["translate"])
        if len(iterations) > 1 and len(set(np.diff(iterations))) == 1:
            kw["scale"] = (float(iterations[1] - iterations[0]), *kw["scale"][1:])
        # napari's slider shows an index: where frames are every k iterations from 0, say so
        step = iterations[1] - iterations[0] if len(iterations) > 1 else 0
        even = step > 0 and iterations == list(range(0, step * len(iterations), step))
        kw["axis_labels"] = (f"iteration / {step}" if even and step > 1 else "iteration", *kw["axis_labels"])
        if "units" in kw:
            kw["units"] = ("pixel", *kw["units"])
        self.stack = self._add("iterations", data, f"{self.source.name} DIP iterations",
                               metadata={"iterations": iterations}, rgb=self.source.rgb,
                               visible=False, **kw, **self.source.look_kwargs())
        self.frames = []  # the stack layer holds them now

    def _add_spread(self, spread: np.ndarray, result_name: str, restarts: int) -> None:
        """The restarts' disagreement as a hidden layer over the result: bright where the fill is
        least certain (the standard deviation across restarts, in the image's units)."""
        kw = self.captured.placed(stack=True, cropped=False, factor=self.factor)
        data = spread.max(axis=-1) if self.source.rgb else spread  # the largest over the colours
        spread_at = data[np.isfinite(data) & (data > 0)]  # where it says anything: the filled pixels
        top = float(np.percentile(spread_at, 99)) if spread_at.size else 1.0  # a few outliers would dim the rest
        self.spread = self._add("spread", data, f"{result_name} spread ({restarts} restarts)",
                                metadata={"restarts": restarts, "units": "the image's, standard deviation"},
                                colormap="inferno", contrast_limits=(0.0, top), blending="additive",
                                visible=False, **kw)

    def _show_curves(self, rgb: np.ndarray) -> None:
        """The curve picture as an RGB layer to the right of the image, as tall as it."""
        s = self.source
        whole = self.captured.full_image
        h, w = whole.shape[-3:-1] if s.rgb else whole.shape[-2:]
        factor = h * s.scale[-2] / rgb.shape[0]
        translate = (s.translate[-2], s.translate[-1] + w * s.scale[-1] * 1.04)
        if self.curve_layer is None:
            self.curve_layer = self._add("curve", rgb, f"{s.name} DIP PSNR curve", rgb=True,
                                         scale=(factor, factor), translate=translate,
                                         axis_labels=s.axis_labels[-2:])
        else:
            self.curve_layer.data = rgb

    # the end ---------------------------------------------------------------------
    def remove_preview(self) -> None:
        if self.preview is not None and self.preview in self.viewer.layers:
            with _removing(self.viewer):
                self.viewer.layers.remove(self.preview)
        self.preview = None

    def finish(self, outcome: Outcome, made: Finale | None = None):
        """Add the result layer (partial when stopped); returns it, or None on error.
        ``made``: the :func:`finale` of this outcome, if the worker made it already."""
        if outcome.error is None:
            self.remove_preview()
        if outcome.error is not None or outcome.output is None:
            return None
        if made is None:
            made = finale(self.captured, self.problem, outcome, self.unit, picture=self.extra_layers)
        if self.extra_layers:
            self._add_stack()
        problem = self.problem
        name = f"{self.source.name} DIP"
        if outcome.stopped:
            position, iteration = outcome.stopped_at
            if problem.slices > 1 and position < 0:  # stopped before the first slice ran
                name += f" (stopped before slice 1/{problem.slices})"
            elif problem.slices > 1:
                name += (f" (stopped at slice {position + 1}/{problem.slices}, "
                         f"iteration {iteration})")
            else:
                name += f" (stopped at {iteration})"
        histories = [h.to_dict() for h in outcome.histories]
        region = self.captured.region
        metadata = {
            "history": histories[0] if histories else None,
            "histories": histories,
            "task": self.captured.task,
            "config": problem.config.to_dict(),
            "notes": list(problem.notes),
            "stopped": outcome.stopped,
            "mask": self.captured.mask_name,
            "reference": self.captured.reference_name,
            "slice_index": self.captured.slice_index,
            "region": None if region is None else [[r.start, r.stop] for r in region],
            "volume": self.captured.volume,  # stack="z" and the spacing, for a z-stack run whole
            "label": self.captured.label,
            "mask_sliced": self.captured.mask_sliced,
            "mask_channels": self.captured.mask_channels,
            "keep_observed": problem.keep_observed,
            # every option as it ran: a number, or an array (a PSF) as lists unless a layer stood for it
            "task_options": {k: (v if np.isscalar(v) else np.asarray(v).tolist())
                             for k, v in self.captured.task_options.items()
                             if np.isscalar(v) or k not in self.captured.option_layers},
            "option_layers": {k: list(v) for k, v in self.captured.option_layers.items()},
        }
        layer = self._add("result", made.data, name, metadata=metadata,
                          **self._source_kwargs(cropped=False, factor=self.factor))
        if made.spread is not None:
            self._add_spread(made.spread, name, problem.config.restarts)
        self.curves = made.curves  # from the histories: every report, not only the live ones
        if made.curve_image is not None and self.extra_layers:
            self._show_curves(made.curve_image)
            self.curve_layer.metadata.update({"histories": histories})
        return layer
