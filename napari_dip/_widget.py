"""The "Deep Image Prior" dock widget: pick layers and settings, Run, watch, Stop.

A thin layer over the plugin's modules (which speak to ``src_core``): the
widget only gathers choices, checks them as they change, starts a
:class:`~napari_dip._run.LayerRun` and shows what comes back.  Set ``NAPARI_DIP_NO_THREAD=1`` (or pass
``threaded=False``) to run in the calling thread, which makes tests simple and
deterministic.
"""

from __future__ import annotations

import math
import os
import textwrap
import threading
import time

import numpy as np

from magicgui import widgets
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (QApplication, QComboBox, QFileDialog, QFrame, QLabel, QProgressBar,
                            QScrollArea, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

import src_core
from src_core import DIPError, tiles

from ._capture import (MASK_FOR_KEY, REFERENCE_FOR_KEY, TASK_FOR_KEY, capture, check_layers,
                       check_painted, current_index, damage_region, image_plane,
                       random_mask_labels, read_mask)
from ._curves import BACKGROUND, LiveCurves
from ._driver import describe_time, run_threads
from ._export import python_call, save_run
from ._layers import ROLE_KEY
from ._live import LIVE_BUDGET_S, live_config, start_live
from ._run import LayerRun
from ._task_fields import TaskFields

NO_THREAD_ENV = "NAPARI_DIP_NO_THREAD"
#: the progress bar, status and curve move on at most this often during a run: each change
#: repaints napari's window, and where OpenGL is done in software (llvmpipe: a virtual display,
#: a remote desktop, a VM) that repaint took CPU from the run, which was 1.5-2x slower in
#: napari than from the API with a report every 10 iterations (docs/benchmarks.md)
PANEL_EVERY_S = 0.5
#: runs from napari learn how much slower than their calibration they run here (src_core.timing)
TIMING_CONTEXT = "napari"
def task_choices() -> list:
    """The task list, read from the task registry when the panel is made."""
    return [(f"{task.name}: {task.help}", task.name) for task in src_core.tasks.TASKS_BY_NAME.values()]


REGION_CHOICES = [("whole image", "whole"), ("around the mask", "damage"), ("tiles (large image)", "tiles")]


def help_url() -> str | None:
    """docs/plugin.md: the project's page when the package names one, else the checkout's file."""
    from importlib import metadata
    from pathlib import Path

    try:
        urls = metadata.metadata("napari-dip").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation":
            return url.strip()
    local = Path(__file__).resolve().parents[1] / "docs" / "plugin.md"
    return local.as_uri() if local.exists() else None


def _threaded_default() -> bool:
    return os.environ.get(NO_THREAD_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


#: network fields that only some generators have (shown for those)
NETWORK_OWN_FIELDS = ("skip_channels", "upsample")


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def error_message(exc: BaseException) -> str:
    """The engine's own message for its errors; a hint for out-of-memory; else the type."""
    if isinstance(exc, DIPError):
        return str(exc)
    text = str(exc)
    if "out of memory" in text.lower():
        return (f"the device ran out of memory ({text.splitlines()[0]}); use fewer channels or "
                "scales, restore the current slice only, or choose device 'cpu'.")
    return f"{type(exc).__name__}: {text}"


class DIPWidget(QWidget):
    """Deep Image Prior restoration of the chosen image layer, live in the viewer.

    ``run_finished`` is emitted (on the main thread) when a run ends, with the
    result layer, or None after an error or an abort.
    """

    run_finished = Signal(object)
    #: a background calibration of this machine's speed finished (the estimate can be told)
    timing_measured = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer,  # noqa: F821 (a string)
                 threaded: bool | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.threaded = _threaded_default() if threaded is None else bool(threaded)
        self.last_error: str | None = None
        self.result_layer = None
        self.current: LayerRun | None = None
        self.problems: list = []
        self._filling = False
        self._filled: dict = {}
        self._plot_drawn_at = -math.inf
        self._progress_shown_at = -math.inf  # when the progress bar and status last moved on
        self._image_auto = True
        self._auto_picking = False
        self._on_destroyed: list = []
        self._measuring: threading.Thread | None = None
        self.live_healing = None    # the napari_dip._live.LiveHealing while live is on
        self.shown_estimate = None  # the src_core.timing.Estimate the panel shows
        self._run_estimate = None   # the one it showed when Run was pressed
        self._warned = ""           # the engine's warnings for the current run, as shown
        self._build()
        self._connect_viewer()
        has_gpu = any(d != "cpu" for d in src_core.available_devices())
        self.preset.value = "text" if has_gpu else "cpu"
        self._fill_from_preset()
        self.reset_choices()

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        """The panel in parts, each built by its own method so that each reads on its own."""
        inputs = self._build_inputs()
        basic = self._build_run_settings()
        self._build_advanced()
        buttons = self._build_buttons()
        for c in (inputs, basic, self.advanced, buttons, self.after):
            c.margins = (0, 0, 0, 0)
        self.form = widgets.Container(widgets=[inputs, basic], labels=False)
        self._keep_narrow()
        self._build_feedback()
        self._build_plot()
        self._lay_out(buttons)
        self._connect()
        # show only the fields of the default task and data term
        self._task_changed()
        self._fidelity_changed()

    def _build_inputs(self) -> widgets.Container:
        """The layers and the task come first: every run starts from what it restores."""
        W = widgets
        self.image = W.ComboBox(label="image", choices=self._image_choices, nullable=True,
                                tooltip="The image layer to restore.")
        self.task = W.ComboBox(label="task", choices=task_choices(), value=src_core.TASKS[0],
                               tooltip="What to restore:\n" + "\n".join(label for label, _ in task_choices()))
        self.task_fields = TaskFields(self._image_choices)  # each task's own options (src_core.tasks)
        self.mask = W.ComboBox(label="mask", choices=self._label_choices, nullable=True,
                               tooltip="Labels layer: painted pixels are the ones to fill.")
        self.label = W.SpinBox(label="mask label", value=0, min=0, max=2**31 - 1,
                               tooltip="Which label marks pixels to fill; 0 = every painted label.")
        self.missing_fraction = W.FloatSpinBox(label="random missing", value=0.5, min=0.0,
                                               max=0.99, step=0.05,
                                               tooltip="Fraction of pixels a random mask removes.")
        self.mask_seed = W.SpinBox(label="mask seed", value=0, min=0, max=2**31 - 1,
                                   tooltip="Seed of the random mask: the same seed drops the "
                                   "same pixels.")
        self.random_mask_button = W.PushButton(text="Make random mask layer",
                                               tooltip="Add a Labels layer with a random "
                                               "fraction of pixels painted (to fill).")
        self.reference = W.ComboBox(label="reference", choices=self._image_choices, nullable=True,
                                    tooltip="Optional clean image for the true PSNR.")
        self.slices = W.ComboBox(label="slices", choices=[("current slice", "current"),
                                                          ("all slices", "all")],
                                 value="current", tooltip="For stacks (Z or T).")
        self.region = W.ComboBox(
            label="region", choices=REGION_CHOICES, value="whole",
            tooltip="Around the mask (inpainting): restore only a box around the painted pixels, "
                    "with the margin of known image the network needs, and paste it back. Tiles: "
                    "restore an image too large for the device in overlapping tiles, blended "
                    "without seams; for inpainting only the tiles with painted pixels run.")
        self.tile = W.SpinBox(label="tile size (px)", value=0, min=0, max=16384, step=32,
                              tooltip="The side of a tile; 0 = auto: the largest the device takes.")
        self.live = W.CheckBox(
            label="live: heal as you paint", value=False,
            tooltip="While on, each stroke, erase or fill on the mask heals the box around it "
                    "after a short pause, in a 'DIP live' layer over the image: the classical fill at "
                    "once, then DIP's previews (at most "
                    f"{LIVE_BUDGET_S:.0f} s a change with a time budget). A new stroke stops the run in "
                    "flight and heals again, from its weights where the boxes overlap. 2D images.")
        return W.Container(widgets=[self.image, self.task, *self.task_fields.widgets,
                                    self.mask, self.label,
                                    self.missing_fraction, self.mask_seed,
                                    self.random_mask_button, self.reference, self.slices,
                                    self.region, self.tile, self.live],
                           labels=True)

    def _build_run_settings(self) -> widgets.Container:
        """The few settings most runs change stay in view; the rest fold away under Advanced."""
        W = widgets
        self.preset = W.ComboBox(label="preset", choices=src_core.preset_names(),
                                 tooltip="Choosing a preset fills the fields below; it also "
                                 "supplies every setting the widget does not show.")
        self.preset_info = W.Label(value="")
        self.fit_budget = W.CheckBox(
            label="fit a time budget", value=True,
            tooltip="On: as many iterations as fit the time budget on this machine (measured "
                    "here), and for the cpu preset a narrower network where the image is too large "
                    "for the wide one to make progress. Typing an iteration count switches it off.")
        self.budget = W.FloatSpinBox(label="time budget (min)", value=src_core.budget.DEFAULT_BUDGET_S / 60,
                                     min=0.25, max=24 * 60, step=0.5,
                                     tooltip="The time each image (each slice of a stack, or the "
                                     "tiles of one image together) may take here.")
        self.iterations = W.SpinBox(label="iterations", value=800, min=1, max=1_000_000,
                                    tooltip="Optimisation steps. More fits more detail, and for "
                                    "noisy images eventually the noise too. With a time budget, "
                                    "the count that fits it.")
        self.keep_observed = W.CheckBox(
            label="keep observed pixels", value=True,
            tooltip="The result equals the input wherever it was observed; only the missing "
                    "pixels come from the network (off: the network's output everywhere).")
        self.early_stop = W.CheckBox(
            label="early stop", value=False,
            tooltip="Stop when the quality measured on 5% held-out pixels has not improved for "
                    "a while, and keep the best result (on by default for denoising).")
        self.keep_earlier = W.CheckBox(
            label="keep earlier results", value=False,
            tooltip="Off: a new run of the same image replaces the layers the last run added "
                    "(a layer you renamed is always kept).")
        self.extra_layers = W.CheckBox(
            label="iterations and curve layers", value=False,
            tooltip="Also add the intermediate outputs as a stack layer (a slider over the "
                    "iterations) and the PSNR curve as a picture layer. Off: one result layer; "
                    "the curve is in the plot below and in the result's history.")
        return W.Container(widgets=[self.preset, self.preset_info, self.fit_budget, self.budget,
                                    self.iterations, self.keep_observed, self.early_stop, self.keep_earlier,
                                    self.extra_layers],
                           labels=True)

    def _build_network_fields(self) -> None:
        """The generator's shape, for those who change what the preset chose."""
        W = widgets
        self.architecture = W.ComboBox(
            label="network", choices=list(src_core.NETWORKS),
            tooltip="The generator: skip (the paper's encoder-decoder) or decoder (the Deep Decoder, "
                    "Heckel & Hand 2019: fewer weights than pixels, for very noisy data). "
                    "Choosing one fills its depth and channels.")
        self.scales = W.SpinBox(label="scales (depth)", value=5, min=1, max=8,
                                tooltip="How many times the network halves the image. Deeper "
                                "sees larger structures but needs larger images.")
        self.channels = W.SpinBox(label="channels", value=128, min=1, max=1024,
                                  tooltip="Channels of the down and up branches at every scale.")
        self.skip_channels = W.SpinBox(label="skip channels", value=4, min=0, max=1024,
                                       tooltip="0 removes the skip connections.")
        self.upsample = W.ComboBox(label="upsampling", choices=["bilinear", "nearest"],
                                   tooltip="How the decoder enlarges: bilinear is smoother, "
                                   "nearest keeps sharper edges.")
        self.input_kind = W.ComboBox(label="input", choices=["uniform", "gaussian", "meshgrid"],
                                     tooltip="The fixed random code the network turns into the "
                                     "image (meshgrid: x/y coordinates, for large holes).")

    def _build_fit_fields(self) -> None:
        """The data term and the optimiser decide what the fit converges to; the seed repeats it."""
        W = widgets
        self.fidelity = W.ComboBox(
            label="data term", choices=list(src_core.FIDELITIES),
            tooltip="How the fit is scored: mse (the paper's) or poisson (the likelihood of photon "
                    "counts, for photon-limited fluorescence; set the camera's gain and offset).")
        self.photon_gain = W.FloatSpinBox(
            label="photon gain", value=1.0, min=1e-6, max=1e6, step=0.1,
            tooltip="Poisson data term: the image's units per photon (the camera's gain).")
        self.photon_offset = W.FloatSpinBox(
            label="photon offset", value=0.0, min=-1e6, max=1e6, step=1.0,
            tooltip="Poisson data term: the image's value at zero photons (the camera's offset).")
        self.lr = W.FloatSpinBox(label="learning rate", value=0.01, min=1e-6, max=1.0, step=0.0005,
                                 tooltip="Adam's step size. Too high makes the fit jump; the "
                                 "guard then goes back to the last good state.")
        self.lr.native.setDecimals(6)
        self.sigma_p = W.FloatSpinBox(label="sigma_p (input noise)", value=0.03, min=0.0, max=1.0,
                                      step=0.005, tooltip="Noise added to the network's input at "
                                      "every step; it regularises the fit (0 = off).")
        self.sigma_p.native.setDecimals(4)
        self.optimizer = W.ComboBox(label="optimiser", choices=["adam", "lbfgs"],
                                    tooltip="Adam (the paper's default) or L-BFGS after 100 "
                                    "Adam steps.")
        self.seed = W.SpinBox(label="seed", value=0, min=0, max=2**31 - 1,
                              tooltip="Seed of the network's weights and input: the same seed and "
                              "settings give the same result on the same device.")
        self.restarts = W.SpinBox(
            label="restarts", value=1, min=1, max=src_core.config.MAX_RESTARTS,
            tooltip="Fit this many networks (seeds seed, seed+1, ...) together, at this many times "
                    "the cost: the result is their mean, and a 'spread' layer (hidden at first) "
                    "shows where they disagree, which is where the fill is least certain.")

    def _build_machine_fields(self) -> None:
        """Where the run works and how often it reports: these change its speed, not its result."""
        W = widgets
        self.device = W.ComboBox(label="device", choices=["auto", *src_core.available_devices()],
                                 tooltip="Where the network runs; auto prefers a CUDA GPU, then "
                                 "Apple's MPS, then the CPU.")
        self.threads = W.SpinBox(
            label="CPU threads", value=0, min=0, max=src_core.speed.usable_cores(),
            tooltip="Torch threads for a CPU run. 0 = auto: the cores other jobs leave free, less "
                    "one for napari (more threads than free cores is many times slower).")
        self.scheduler = W.LineEdit(
            label="Dask scheduler", value="",
            tooltip="Address of a Dask scheduler (e.g. tcp://10.0.0.5:8786): all slices (or all tiles) "
                    "are sent there at once and arrive as they finish. Empty: run here. Start one with "
                    "`dask scheduler` and `dask worker <address>` (docs/scale-out.md).")
        self.preview_every = W.SpinBox(label="preview every", value=50, min=0, max=100_000,
                                       tooltip="Iterations between previews (0 = only the end).")
        self.report_every = W.SpinBox(label="curve every", value=10, min=1, max=100_000,
                                      tooltip="Iterations between PSNR points and progress.")

    def _build_advanced(self) -> None:
        """The expert fields fold away behind a toggle, so that the panel's first view stays short."""
        self._build_network_fields()
        self._build_fit_fields()
        self._build_machine_fields()
        self.defaults_button = widgets.PushButton(text="Restore defaults",
                                                  tooltip="Put the preset's values back into every field.")
        self.advanced = widgets.Container(
            widgets=[self.architecture, self.scales, self.channels, self.skip_channels, self.upsample,
                     self.input_kind, self.fidelity, self.photon_gain, self.photon_offset, self.lr,
                     self.sigma_p, self.optimizer, self.seed, self.restarts, self.device, self.threads,
                     self.scheduler, self.preview_every, self.report_every, self.defaults_button],
            labels=True)
        self.advanced.native.setVisible(False)
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced settings")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setToolTip("Network and its shape, data term, learning rate, input noise, optimiser, "
                                        "seed, device, threads and update intervals.")

    def _build_buttons(self) -> widgets.Container:
        """Run/Stop (returned) and Save/Copy (``self.after``) stay in view below the scrolling part."""
        W = widgets
        self.run_button = W.PushButton(text="Run", tooltip="Start restoring in the background.")
        self.stop_button = W.PushButton(text="Stop", enabled=False,
                                        tooltip="End after the current step and keep the partial "
                                        "result.")
        self.save_button = W.PushButton(text="Save run...", enabled=False,
                                        tooltip="Write the last result (TIFF or PNG, in the input's "
                                        "type), its history with the full settings (JSON) and "
                                        "its PSNR curve (PNG).")
        self.copy_button = W.PushButton(text="Copy as Python", enabled=False,
                                        tooltip="Copy the src_core.restore(...) call that repeats "
                                        "the last run, for the napari console or a notebook.")
        self.after = W.Container(widgets=[self.save_button, self.copy_button], layout="horizontal",
                                 labels=False)
        return W.Container(widgets=[self.run_button, self.stop_button], layout="horizontal",
                           labels=False)

    def _keep_narrow(self) -> None:
        """Long layer names and preset descriptions must not widen the dock over the canvas."""
        for combo in (self.image, self.mask, self.reference, self.slices, self.region,
                      self.preset, *self.task_fields.layer_pickers, self.architecture, self.fidelity,
                      self.upsample, self.input_kind, self.optimizer, self.device):
            combo.native.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(10)

    def _build_feedback(self) -> None:
        """What the user reads before and during a run: the checks, the progress and the status."""
        self.check_label = QLabel("")
        self.check_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def _build_plot(self) -> None:
        """The live PSNR curve shows whether more iterations would still help."""
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.2), dpi=90)
        self.figure.patch.set_facecolor(BACKGROUND)
        self.axes = self.figure.add_subplot(111)
        self._curves = LiveCurves(self.figure, self.axes)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(150)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._draw_plot(force=True)

    def _lay_out(self, buttons: widgets.Container) -> None:
        """The form scrolls; what a run needs at hand (the checks, Run/Stop, the progress, the
        status, the curve, Save and Copy) stays below it, so that all of it is in view on a
        1366x768 screen."""
        self.setMaximumWidth(520)
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        body_layout.addWidget(self.form.native)
        body_layout.addWidget(self.advanced_toggle)
        body_layout.addWidget(self.advanced.native)
        body_layout.addStretch(1)
        url = help_url()
        self.help_label = QLabel(f'<a href="{url}">Help: docs/plugin.md</a>' if url else
                                 "Help: docs/plugin.md in the napari-dip source")
        self.help_label.setOpenExternalLinks(True)
        self.help_label.setToolTip("How to use the plugin, and what each setting does.")
        body_layout.addWidget(self.help_label)
        self.scroll = QScrollArea()
        self.scroll.setWidget(body)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setMinimumHeight(120)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.scroll, stretch=1)
        layout.addWidget(self.check_label)
        layout.addWidget(buttons.native)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        # the curve and what to do with the result stay in view during and after a run (the
        # form above scrolls); the plot appears with the first run, it is empty before
        layout.addWidget(self.canvas)
        layout.addWidget(self.after.native)
        self.canvas.setVisible(False)

    def _connect(self) -> None:
        """Every field that changes a run checks it again, so that Run is enabled only when it can work."""
        self.advanced_toggle.toggled.connect(self._show_advanced)
        self.run_button.changed.connect(self.run)
        self.timing_measured.connect(self.check)
        self.stop_button.changed.connect(self.stop)
        self.random_mask_button.changed.connect(self.make_random_mask)
        self.save_button.changed.connect(self.save_last_run)
        self.copy_button.changed.connect(self.copy_as_python)
        self.defaults_button.changed.connect(self.restore_defaults)
        self.preset.changed.connect(self._fill_from_preset)
        self.image.changed.connect(self._image_changed)
        self.task.changed.connect(self._task_changed)
        self.architecture.changed.connect(self._architecture_changed)
        self.fidelity.changed.connect(self._fidelity_changed)
        # before the checks below: a typed count switches the budget off before the panel is checked
        self.iterations.changed.connect(self._iterations_typed)
        self.fit_budget.changed.connect(self._budget_toggled)
        for w in (self.scales, self.channels, self.skip_channels, self.upsample, self.input_kind,
                  self.iterations, self.fit_budget, self.budget, self.lr, self.sigma_p, self.optimizer,
                  self.preview_every,
                  self.report_every, self.task, self.early_stop, self.mask, self.reference,
                  self.label, self.region, self.slices, self.threads, self.device, self.tile,
                  self.architecture, self.fidelity, self.photon_gain, self.photon_offset, self.restarts,
                  *self.task_fields.widgets):
            w.changed.connect(self.check)
        self.region.changed.connect(self._region_changed)
        self.live.changed.connect(self._live_toggled)
        self.mask.changed.connect(self._live_still_fits)

    # ------------------------------------------------------------------ layer choices
    def _image_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image)
                and layer.metadata.get(ROLE_KEY) not in ("preview", "curve", "iterations", "spread", "live")]

    def _label_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._layer_inserted)
        events.removed.connect(self.reset_choices)
        events.reordered.connect(self.reset_choices)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.reset_choices)

    def _layer_inserted(self, event=None) -> None:
        if event is not None and getattr(event, "value", None) is not None:
            event.value.events.name.connect(self.reset_choices)
        if self.image.value is None:
            self._image_auto = True  # nothing chosen: follow what the user opens
        self.reset_choices()

    def reset_choices(self, event=None) -> None:
        """Refresh the layer lists; napari also calls this when layers change.

        The user's choice never jumps to another layer: when the chosen image is
        removed the selector goes empty and says so (a running run keeps its copy).
        """
        if self._live_layers_gone():
            self._stop_live()
            self.status.setText("Live healing stopped: its image, mask or live layer was removed.")
        before = self.image.value
        for combo in (self.image, self.mask, self.reference, *self.task_fields.layer_pickers):
            combo.reset_choices()
        if self._image_auto:
            self._pick_default_image()
        elif before is not None and before not in self.viewer.layers:
            self.image.value = None
            self._image_changed()
            self.status.setText(f"The image '{before.name}' was removed; choose another.")
        elif self.image.value is not before:
            self._image_changed()
        else:
            self._pick_partners()
            self.check()

    def _pick_default_image(self) -> None:
        """The active image layer, else the topmost one, skipping references and our outputs
        (a sample adds its reference first).  Kept up to date until the user picks one."""
        choices = [layer for _, layer in self._image_choices()]
        candidates = [layer for layer in choices if REFERENCE_FOR_KEY not in layer.metadata
                      and ROLE_KEY not in layer.metadata] or choices
        self._auto_picking = True
        try:
            if candidates:
                active = self.viewer.layers.selection.active
                self.image.value = active if active in candidates else candidates[-1]
            self._image_auto = True
            self._image_changed()
        finally:
            self._auto_picking = False

    def _image_changed(self, *_) -> None:
        if not self._auto_picking:
            self._image_auto = False  # the user chose: keep it
        self._live_still_fits()
        image = self.image.value
        self.slices.enabled = image is not None and image.ndim > 2
        task = None if image is None else image.metadata.get(TASK_FOR_KEY)
        if task in src_core.tasks.TASKS_BY_NAME and task != self.task.value:  # a sample says what it is for
            self.task.value = task
        self._drop_partners_of_another_image()
        self._pick_partners()
        self.check()

    def _drop_partners_of_another_image(self) -> None:
        """Another image was chosen: a mask or reference that does not fit it (another plane, or
        made for another image) is cleared, so that the partners are picked for it afresh."""
        image = self.image.value
        if image is None:
            return
        h, w = image_plane(image)
        factor = self._answer_factor()  # a super-resolution reference is that much larger
        for combo, key, plane in ((self.mask, MASK_FOR_KEY, (h, w)),
                                  (self.reference, REFERENCE_FOR_KEY, (h * factor, w * factor))):
            partner = combo.value
            if partner is None:
                continue
            made_for = partner.metadata.get(key)
            shape = tuple(np.shape(partner.data))
            fits = plane in (shape[-2:], shape[-3:-1])  # (a mask with the RGB image's channels)
            if (made_for is not None and made_for != image.name) or not fits:
                combo.value = None

    def _pick_partners(self) -> None:
        """Masks and references made for the chosen image (samples, the random-mask button);
        else, for the mask, the topmost Labels layer of the image's size (one painted by hand)."""
        image = self.image.value
        if image is None:
            return
        for layer in self.viewer.layers:
            meta = layer.metadata
            if (self.mask.value is None and isinstance(layer, Labels)
                    and meta.get(MASK_FOR_KEY) == image.name):
                self.mask.value = layer
            if (self.reference.value is None and isinstance(layer, Image)
                    and meta.get(REFERENCE_FOR_KEY) == image.name):
                self.reference.value = layer
        if self.mask.value is None:
            fitting = [layer for layer in self.viewer.layers if isinstance(layer, Labels)
                       and MASK_FOR_KEY not in layer.metadata
                       and tuple(np.shape(layer.data))[-2:] == image_plane(image)]
            if fitting:
                self.mask.value = fitting[-1]

    def _task_changed(self, *_) -> None:
        """Show only the fields that apply to the task (as the task registry describes it)."""
        task = src_core.get_task(self.task.value)
        painted = task.mask == "required"
        for w in (self.mask, self.label, self.random_mask_button, self.live):
            w.visible = painted
        self._live_still_fits()
        for w in (self.missing_fraction, self.mask_seed):
            w.visible = task.mask == "random"
        self.keep_observed.visible = task.keep_observed  # observed pixels are answer pixels
        self.task_fields.show(task.name)
        if not painted and self.region.value == "damage":
            self.region.value = "whole"
        # "around the mask" needs a painted mask
        self.region.choices = [c for c in REGION_CHOICES if painted or c[1] != "damage"]
        self._region_changed()
        self.early_stop.value = task.noisy  # noisy data: stop before fitting it

    def _region_changed(self, *_) -> None:
        self.tile.visible = self.region.value == "tiles"

    def _iterations_typed(self, *_) -> None:
        """A count the user gives is the count run (the budget's own filling is not the user's)."""
        if not self._filling:
            self.fit_budget.value = False

    def _budget_toggled(self, *_) -> None:
        self.budget.visible = bool(self.fit_budget.value)

    def _show_advanced(self, shown: bool) -> None:
        self.advanced.native.setVisible(shown)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def restore_defaults(self, *_) -> None:
        """The preset's values in every field, and automatic threads and intervals."""
        self.threads.value = 0
        self.preview_every.value, self.report_every.value = 50, 10
        self.seed.value = 0
        self.restarts.value = 1
        self.device.value = "auto"
        self._fill_from_preset()

    # ------------------------------------------------------------------ presets and config
    def _fill_from_preset(self, *_) -> None:
        """Put the preset's values into the fields (seed, device and intervals are kept)."""
        name = self.preset.value
        entry = src_core.PRESETS[name]
        cfg = entry.config
        filled = dict(
            **self._network_values(cfg.network),
            input_kind=cfg.input_kind, iterations=cfg.iterations, lr=cfg.lr,
            sigma_p=round(cfg.sigma_p, 4), optimizer=cfg.optimizer, fidelity=cfg.fidelity,
            photon_gain=cfg.photon_gain, photon_offset=cfg.photon_offset,
        )
        self._fill(filled, replace=True)
        task = src_core.tasks.preset_task(name)  # None: a preset for any task (cpu)
        if task is not None and task != self.task.value:  # the paper's presets are per task
            self.task.value = task
        text = entry.description + ("" if task is None else f" [task: {task}]")
        # explicit line breaks: a word-wrapped label in a form row gets a wrong height
        self.preset_info.value = textwrap.fill(text, 36)
        self.preset_info.tooltip = text
        self.fit_budget.value = name == "cpu"  # the paper's presets are their own counts
        self._budget_toggled()
        self.check()

    def _fill(self, filled: dict, replace: bool = False) -> None:
        """Put ``filled`` into the fields of those names and remember what they hold (spin boxes
        round), so that a field left as filled compares unchanged."""
        self._filling = True
        try:
            for key, value in filled.items():
                getattr(self, key).value = value
        finally:
            self._filling = False
        held = {key: getattr(self, key).value for key in filled}
        self._filled = held if replace else {**self._filled, **held}
        self._fidelity_changed()

    def _network_values(self, net) -> dict:
        """The network fields' values for generator settings ``net``; the fields of settings it
        does not have are hidden."""
        values = {"architecture": net.architecture, "scales": net.scales, "channels": net.width()}
        names = net.field_names()
        for key in NETWORK_OWN_FIELDS:
            getattr(self, key).visible = key in names
            if key in names:
                values[key] = _first(getattr(net, key))
        return values

    def _architecture_changed(self, *_) -> None:
        """Another generator: its depth and channels (the preset's own, or the generator's defaults)."""
        if self._filling:
            return
        preset_net = src_core.PRESETS[self.preset.value].config.network
        architecture = self.architecture.value
        net = (preset_net if architecture == preset_net.architecture
               else src_core.network.network_settings(architecture))
        self._fill(self._network_values(net))
        self.check()

    def _fidelity_changed(self, *_) -> None:
        for w in (self.photon_gain, self.photon_offset):
            w.visible = self.fidelity.value == "poisson"

    def build_config(self) -> src_core.RunConfig:
        """The run's configuration: the preset plus every field that was changed.

        Network fields the user left as the preset filled them are not
        overridden, so per-scale lists (the library preset's channels) survive
        (a new depth cuts or extends them, ``with_scales``).  Another network
        starts from its own defaults.
        """
        config = src_core.preset(self.preset.value)
        filled = self._filled

        def changed(key):
            return getattr(self, key).value != filled.get(key)

        if self.architecture.value != config.network.architecture:
            config = config.replace(architecture=self.architecture.value)
        if changed("input_kind"):
            config = config.with_input_kind(self.input_kind.value)
        net = config.network
        if changed("scales"):
            net = net.with_scales(int(self.scales.value))
        if changed("channels"):
            net = net.with_width(int(self.channels.value))
        config.network = net
        own = {f"network.{key}": getattr(self, key).value for key in NETWORK_OWN_FIELDS
               if key in net.field_names() and changed(key)}
        return config.replace(
            iterations=int(self.iterations.value), lr=float(self.lr.value),
            sigma_p=float(self.sigma_p.value), optimizer=self.optimizer.value,
            seed=int(self.seed.value), restarts=int(self.restarts.value), device=self.device.value,
            snapshot_every=int(self.preview_every.value), report_every=int(self.report_every.value),
            early_stop=bool(self.early_stop.value), fidelity=self.fidelity.value,
            photon_gain=float(self.photon_gain.value), photon_offset=float(self.photon_offset.value),
            **own).validate()

    def check(self, *_) -> list:
        """Flag what cannot work before a run (above the Run button, which stays disabled
        until nothing is flagged), and show the run's time estimate."""
        if self._filling:
            return []
        if self.is_running:  # the form is locked; checked again when the run ends
            return self.problems
        if self.live_healing is not None:  # Run waits; the mask changes as it is painted
            text = (f"Live healing: paint on '{self.live_healing.mask_layer.name}'; each change heals the box "
                    "around it in the 'DIP live' layer. Turn live off to Run.")
            self.check_label.setText(text)
            self.check_label.setStyleSheet("")
            self.check_label.setVisible(True)
            self.run_button.enabled = False
            self.run_button.tooltip = text
            return []
        problems = []
        try:
            config = self.build_config()
        except DIPError as exc:
            problems.append(str(exc))
            config = None
        image = self.image.value
        plane = None
        try:
            options = self.task_options()
            operator = src_core.get_task(self.task.value).operator(**options)  # checks the factor, the PSF
            mask = check_layers(image, self._mask_layer(), self.reference.value, task=self.task.value,
                                factor=operator.factor)
            self._check_painted(image, mask)
            plane = self._run_plane(image, mask, config)
        except DIPError as exc:
            problems.append(str(exc))
        if config is not None and plane is not None:
            warning = config.network.size_problem(*plane)
            if warning:
                problems.append(warning)
            else:
                problems += self._memory_problem(config, image, plane)
        estimate = self._estimate(config, image, plane) if not problems else ""
        text = "\n".join([f"\u26a0 {p}" for p in problems] + ([estimate] if estimate else []))
        self.check_label.setText(text)
        self.check_label.setVisible(bool(text))
        # a problem or a warning in orange; a plain estimate in the panel's own colour
        self.check_label.setStyleSheet("color: #f0a030;" if "\u26a0" in text else "")
        self.problems = problems
        if not self.is_running:
            self.run_button.enabled = not problems and self.live_healing is None
        self.run_button.tooltip = text or "Start restoring in the background."
        return problems

    def _memory_problem(self, config, image, plane) -> list:
        """The engine's refusal of a run too large for the device, before Run (not after)."""
        device = src_core.resolve_device(config.device)
        factor = self._answer_factor()
        try:
            src_core.speed.check_memory(config.network, 3 if getattr(image, "rgb", False) else 1,
                                        (plane[0] * factor, plane[1] * factor),
                                        src_core.speed.resolve_precision(config.precision, device), device)
        except DIPError as exc:
            return [str(exc)]
        return []

    def _mask_layer(self):
        """The mask layer a run uses: the chosen one where the task fills a painted mask (its
        field is shown), else none, so that a hidden choice is never used or flagged."""
        return self.mask.value if self._painted_mask() else None

    def _check_painted(self, image, mask_layer) -> None:
        """An empty (or full) painted mask, flagged before Run as the capture would refuse it
        (not for a lazy stack: reading it would load every slice)."""
        if mask_layer is None or src_core.imaging.is_lazy(mask_layer.data):
            return
        label = int(self.label.value) or None
        index = self._slice_index(image)
        observed, sliced, _ = read_mask(mask_layer, image, index, label)
        check_painted(observed, str(mask_layer.name), label, index if sliced else None)

    def _painted_mask(self) -> bool:
        """The task fills a mask the user paints (its mask layer counts)."""
        return src_core.get_task(self.task.value).mask == "required"

    def _threads(self) -> int:
        return run_threads(int(self.threads.value))

    def _slice_index(self, image):
        if image is not None and image.ndim > 2 and self.slices.value == "current":
            return current_index(self.viewer, image)
        return None

    def _slices_run(self, image) -> int:
        """How many slices Run restores: 1, or every slice of a stack when slices is "all"."""
        if image is None or self._slice_index(image) is not None:
            return 1
        data_shape = image.data.shape[:-3] if getattr(image, "rgb", False) else image.data.shape[:-2]
        return int(np.prod(data_shape)) if len(data_shape) else 1

    def _tiling(self, image, config) -> tuple[int, int, int]:
        """(tile side, tiles that run, tiles) of a tiled run as set (a stack's slices each tiled)."""
        factor = self._answer_factor()
        channels = 3 if getattr(image, "rgb", False) else 1
        tile = int(self.tile.value) or tiles.choose_tile(
            config, channels, src_core.resolve_device(config.device), factor=factor)
        spans = tiles.spans(image_plane(image), tile, tiles.default_overlap(tile, config.network))
        slices = self._slices_run(image)
        if self._mask_layer() is None:
            return tile, len(spans) * slices, len(spans) * slices
        observed, _, per_channel = read_mask(self._mask_layer(), image, self._slice_index(image),
                                             int(self.label.value) or None)
        observed = observed.all(axis=-1) if per_channel else observed
        planes = observed.reshape(-1, *observed.shape[-2:]) if observed.ndim > 2 else [observed] * slices
        return tile, sum(len(tiles.tiles_to_run(spans, plane)) for plane in planes), len(spans) * slices

    def _run_plane(self, image, mask_layer, config, region=None) -> tuple:
        """The (H, W) the network will see: the image's, a tile, or the box around the mask."""
        plane = image_plane(image)
        region = region or self.region.value
        if region == "tiles" and config is not None:
            tile = self._tiling(image, config)[0]
            return min(plane[0], tile), min(plane[1], tile)
        if region != "damage" or not self._painted_mask() or mask_layer is None or config is None:
            return plane
        observed, _, per_channel = read_mask(mask_layer, image, self._slice_index(image),
                                             int(self.label.value) or None)
        box = damage_region(observed, config, per_channel)
        return plane if box is None else (box[0].stop - box[0].start, box[1].stop - box[1].start)

    def _estimate(self, config, image, plane) -> str:
        """'Estimate: about 2.1 min (...)' for the run as set, with a warning when it is long.

        From this machine's measured speed (:mod:`src_core.timing`); settings not measured
        yet show the prior's figure while a short calibration runs in the background, which
        checks again when it is done."""
        channels = 3 if getattr(image, "rgb", False) else 1
        slices = self._slices_run(image)
        tiled = ""
        if self.region.value == "tiles":
            _, slices, total = self._tiling(image, config)
            tiled = f" for {slices} of {total} tiles"
        try:
            wide = config
            config, fitted = self.run_config(config, image)
            operator, classical, each = self._classical(image, plane)
            request = dict(config=config, channels=channels, observed_hw=plane, operator=operator,
                           threads=self._threads())
            estimate = src_core.timing.estimate(**request, slices=slices, classical_s=slices * each,
                                                measure=False, context=TIMING_CONTEXT)
        except DIPError:
            return ""
        self.shown_estimate = estimate
        wanted = [request]
        if fitted is not None:  # the budget weighed both widths at its own size (a tiled run's: the image)
            wanted += [{**request, "config": c, "observed_hw": fitted.observed_hw} for c in (wide, config)]
        unmeasured = [r for r in wanted if not src_core.timing.step_time(**r, measure=False).measured]
        if unmeasured and self.threaded:
            self._measure_in_background(unmeasured, classical)
        where = tiled or ("" if plane == image_plane(image) else f" for the {plane[0]}x{plane[1]} box")
        text = f"Estimate{where}: {estimate.describe()}"
        if fitted is not None:
            self._show_count(fitted.config.iterations)
            text += (f"\nbudget: {fitted.describe()}{' for the tiles together' if tiled else ''}; for more, "
                     "set iterations or a longer time budget")
        if estimate.total_s > src_core.timing.LONG_RUN_S and not estimate.device.startswith("cuda"):
            text = "\u26a0 " + text + ": a long run; the 'cpu' preset takes minutes"
            if self.region.value == "whole" and self.region.visible:
                box = self._run_plane(image, self._mask_layer(), config, region="damage")
                if box != plane:
                    text += f"; 'around the mask' restores only a {box[0]}x{box[1]} box"
        return text

    def _show_count(self, iterations: int) -> None:
        """The count the budget chose, in the iterations field (not taken as the user's)."""
        self._set_quietly(self.iterations, iterations)

    def _set_quietly(self, field, value) -> None:
        """Set a field as the panel's own doing: no check, and not taken as the user's choice."""
        self._filling = True
        try:
            field.value = value
        finally:
            self._filling = False

    def _classical(self, image, plane) -> tuple:
        """(the task's operator, the classical timing's request, its seconds per slice as known
        here: the blend times it from the fitted pixels too)."""
        channels = 3 if getattr(image, "rgb", False) else 1
        task = src_core.get_task(self.task.value)
        operator = task.operator(**self.task_options())
        classical = dict(method=task.classical, channels=channels, observed_hw=plane, operator=operator,
                         holes=src_core.timing.holes_of(task.mask))
        blends = operator.factor == 1
        return operator, classical, src_core.timing.classical_seconds(**classical, measure=False) * (2 if blends else 1)

    def run_config(self, config, image) -> tuple:
        """(the configuration a run as set uses, the src_core.budget.Fitted that chose its count
        or None): with iterations on auto, the count (and for the cpu preset the network's
        width) that fits the time budget, from what this machine has measured and napari's
        learned speed (no calibration here: the panel's background one measures what it
        shows).  A tiled run's tiles share one budget, as from the command line."""
        if not self.fit_budget.value or image is None or config is None:
            return config, None
        plane = (image_plane(image) if self.region.value == "tiles"
                 else self._run_plane(image, self._mask_layer(), config))
        task = src_core.get_task(self.task.value)
        tiled = self.region.value == "tiles"  # (the whole image's fit has no classical answer)
        fitted = src_core.budget.fit_run(
            config, task, 3 if getattr(image, "rgb", False) else 1, plane, budget_s=60 * float(self.budget.value),
            operator=task.operator(**self.task_options()), threads=self._threads(),
            classical=None if tiled else "auto", measure=False, context=TIMING_CONTEXT)
        return fitted.config, fitted

    def _measure_in_background(self, requests: list, classical: dict) -> None:
        """Calibrate this machine for the settings as set (a second or so, once per setting),
        one calibration at a time; the panel checks again when it is done."""
        if self._measuring is not None and self._measuring.is_alive():
            return  # the check after it asks for the settings then shown

        def measure():
            try:
                for request in requests:
                    src_core.timing.step_time(**request, measure=True)
                src_core.timing.classical_seconds(**classical, measure=True)
            except Exception:  # an estimate is never worth an error: the run's own checks speak
                return
            try:
                self.timing_measured.emit()
            except RuntimeError:  # the panel was closed meanwhile
                pass

        self._measuring = threading.Thread(target=measure, name="napari-dip timing", daemon=True)
        self._measuring.start()

    # ------------------------------------------------------------------ running
    @property
    def is_running(self) -> bool:
        return self.current is not None and not self.current.done

    @property
    def worker(self):
        return None if self.current is None else self.current.worker

    def _report_error(self, message: str) -> None:
        self.last_error = message
        self.status.setText(f"Error: {message}")
        self.status.setStyleSheet("color: #ff6060;")
        show_error(f"Deep Image Prior: {message}")

    def capture(self, around: np.ndarray | None = None):
        """The chosen layers and settings, checked and copied (raises DIPError).  ``around``: live
        healing's change (H, W), whose box runs here, with the live budget (napari_dip._live)."""
        image = self.image.value
        task = self.task.value
        live = around is not None
        # a run as the estimate said; a live change's count is fitted to its own box below
        config = self.build_config() if live else self.run_config(self.build_config(), image)[0]
        captured = capture(
            image, self._mask_layer(), self.reference.value, task=task,
            label=int(self.label.value) or None, config=config,
            slice_index=self._slice_index(image), missing_fraction=float(self.missing_fraction.value),
            mask_seed=int(self.mask_seed.value), threads=self._threads(),
            keep_observed=bool(self.keep_observed.value) if src_core.get_task(task).keep_observed else None,
            region="damage" if live else self.region.value, task_options=self.task_options(),
            tile=int(self.tile.value) or "auto", scheduler=None if live else self.scheduler.value,
            option_layers=self.task_fields.layer_sources(task), around=around)
        if live and self.fit_budget.value:
            captured.config = live_config(captured, 60 * float(self.budget.value), self._threads())
        return captured

    def task_options(self) -> dict:
        """The chosen task's own settings (src_core.tasks), from their fields."""
        return self.task_fields.values(self.task.value)

    def _answer_factor(self) -> int:
        """How many times larger than the input the answer is along Y and X (the task's operator)."""
        try:
            return src_core.get_task(self.task.value).operator(**self.task_options()).factor
        except DIPError:
            return 1  # check() reports the bad option

    def run(self, *_) -> None:
        """Capture the inputs and settings now, then restore in a worker thread."""
        if self.is_running:
            return
        self.last_error = None
        self._warned = ""  # the engine's warnings for this run, said again in each status line
        self.status.setStyleSheet("")
        try:
            captured = self.capture()
            run = LayerRun(self.viewer, captured, keep_earlier=bool(self.keep_earlier.value),
                           extra_layers=bool(self.extra_layers.value),
                           on_update=self._on_update, on_done=self._on_done)
        except Exception as exc:  # bad input: tell the user, touch nothing
            self._report_error(error_message(exc))
            return
        self.current = run
        self._run_estimate = self.shown_estimate  # what the panel said before Run, to learn from
        self._started = time.monotonic()
        self._set_running(True)
        self.canvas.setVisible(True)
        self.status.setText("Preparing the run: the engine's checks and conversion...")
        self.progress.setValue(0)
        self.progress.setFormat("starting...")
        self._draw_plot(force=True)
        if self.threaded:
            worker = run.start(threaded=True)
            # closing the dock widget or the viewer mid-run stops the engine at its next step
            self._on_destroyed = [run.driver.request_stop, worker.quit]
            for slot in self._on_destroyed:
                self.destroyed.connect(slot)
        else:
            run.start(threaded=False)

    @staticmethod
    def _running_text(run: LayerRun) -> str:
        """'Running on ...': what runs where, once the run is prepared."""
        captured, driver = run.captured, run.driver
        where = (f"slice {captured.slice_index}" if captured.slice_index is not None
                 else f"{run.problem.slices} slice(s)")
        if driver.tiled:
            where += (f", {driver.count} of {len(driver.work.tiles) * run.problem.slices} tiles of "
                      f"{driver.work.tile} px")
        if captured.scheduler:
            where += f", on the Dask cluster at {captured.scheduler}"
        if captured.region is not None:
            rows, cols = captured.region
            where += f", the {rows.stop - rows.start}x{cols.stop - cols.start} box around the mask"
        return f"Running on {where}, device {src_core.resolve_device(run.problem.config.device)}..."

    def stop(self, *_) -> None:
        """Finish after the current iteration and keep the partial result as a layer."""
        if not self.is_running:
            return
        self.current.stop()
        self.stop_button.enabled = False
        self.status.setText("Stopping after the current iteration...")

    def _set_running(self, running: bool) -> None:
        self.stop_button.enabled = running
        self.form.enabled = not running
        for button in (self.save_button, self.copy_button):
            button.enabled = not running and self.result_layer is not None
        if running:
            self.run_button.enabled = False
        else:
            self.check()

    def _on_update(self, update) -> None:
        run = self.current
        if run is None:
            return
        event = update.event
        if update.kind == "prepared":
            warned = run.driver.warnings
            for message in warned:
                show_warning(f"Deep Image Prior: {message}")
            self._warned = "".join(f"\u26a0 {m[:1].upper() + m[1:]}. " for m in warned)
            if not run.stop_requested:
                self.status.setText(self._warned + self._running_text(run))
        elif update.kind == "progress":
            now = time.monotonic()
            if now - self._progress_shown_at < PANEL_EVERY_S and event.output is None:
                return  # see PANEL_EVERY_S; a preview's report is always shown
            self._progress_shown_at = now
            done = run.done_iterations(update)
            ips = event.iterations_per_second
            left = (run.total - done) / ips if ips and ips > 0 else float("nan")
            self.progress.setValue(int(1000 * done / max(run.total, 1)))
            self.progress.setFormat(f"%p%  \u00b7  {ips:.1f} it/s  \u00b7  "
                                    f"{describe_time(left)} left")
            parts = []
            if update.count > 1:
                parts.append(f"{update.unit} {update.position + 1}/{update.count}")
            parts.append(f"iteration {event.iteration}/{event.total}")
            parts.append(f"fit {event.fit_psnr:.2f} dB")
            if event.psnr is not None:
                parts.append(f"PSNR {event.psnr:.2f} dB")
            if not run.stop_requested:
                self.status.setText(self._warned + "  \u00b7  ".join(parts))
            self._draw_plot()
        elif update.kind == "finished":
            self.progress.setValue(int(1000 * run.done_iterations(update) / max(run.total, 1)))
            self.progress.setFormat(f"%p%  \u00b7  {run.arrived}/{update.count} {update.unit}s done")
            self._draw_plot()
        elif update.message and not run.stop_requested:
            where = f"{update.unit} {update.position + 1}/{update.count}: " \
                if update.count > 1 and update.kind != "cluster" else ""
            self.status.setText(where + update.message + "...")
            if update.kind == "slice" and update.position == 0:
                self.progress.setFormat("setting up...")
        elif update.kind in ("recovery", "early_stop"):
            self.status.setText(event.message)

    def _on_done(self, run: LayerRun) -> None:
        """The run ended (main thread): report it and make the panel ready for the next."""
        for slot in self._on_destroyed:  # or they would keep the finished run's data alive
            try:
                self.destroyed.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        self._on_destroyed = []
        result = self._report_outcome(run)
        if result is not None:
            self.result_layer = result
        self._set_running(False)
        self.run_finished.emit(result)

    def _report_outcome(self, run: LayerRun):
        outcome = run.outcome
        if run.abandoned or outcome is None:  # or the worker was aborted
            self.status.setText("Aborted.")
            self.progress.setFormat("aborted")
            return None
        if run.finish_error is not None:
            self._report_error(f"could not add the run's layers: {error_message(run.finish_error)}")
            return None
        if outcome.error is not None:
            self._report_error(error_message(outcome.error))
            return None
        layer = run.result
        seconds = time.monotonic() - self._started
        if outcome.stopped:
            # the iterations that ran (a stopped slice's arrival would count it whole)
            ran = sum(h.timings.get("iterations", 0) for h in outcome.histories)
            self.progress.setValue(min(999, int(1000 * ran / max(run.total, 1))))
            self.status.setText(f"Stopped after {ran} of {run.total} iterations; partial result kept "
                                f"as '{layer.name}'.")
            show_info(f"Deep Image Prior stopped; partial result kept as '{layer.name}'.")
        else:
            history = outcome.histories[-1] if outcome.histories else None
            psnr = history.final_psnr if history is not None else None
            extra = f", PSNR {psnr:.2f} dB" if psnr is not None else ""
            summary = history.summary if history is not None else {}
            if summary.get("psnr_classical") is not None:
                extra += f" ({summary['classical_method']}: {summary['psnr_classical']:.2f} dB)"
            self._learn_speed(outcome.histories)
            unfinished = any(h.still_improving is not None for h in outcome.histories)
            verdicts = [h.summary["verdict"] for h in outcome.histories if h.summary.get("verdict")]
            said = verdicts[0][:1].upper() + verdicts[0][1:] if verdicts else ""  # a stack's first speaks
            if len(verdicts) > 1:
                said += f" ({len(verdicts)} of {len(outcome.histories)} slices alike.)"
            self.status.setText(self._warned + f"Done in {describe_time(seconds)}{extra}: '{layer.name}'."
                                + (f" {said}" if said else "")
                                + (" Still improving at the end: more iterations would help."
                                   if unfinished and not said else ""))
            self.progress.setValue(1000)
        self.progress.setFormat("stopped at %p%" if outcome.stopped else "done")
        self._draw_plot(force=True)
        return layer

    def _learn_speed(self, histories) -> None:
        """A finished run's speed against the estimate shown before it: later estimates in
        napari account for what napari's own work costs the run on this machine."""
        estimate = self._run_estimate
        steps = [h.timings.get("s_per_iteration") for h in histories if h.timings.get("iterations", 0) >= 20]
        if estimate is None or not estimate.measured or not steps or estimate.device != "cpu":
            return
        src_core.timing.learn(TIMING_CONTEXT, estimate.calibrated_step_s, float(np.mean(steps)))

    # ------------------------------------------------------------------ after a run
    def save_last_run(self, *_, path=None):
        """Write the last result, its history JSON and its curve (asks where, unless ``path``)."""
        layer = self.result_layer
        if layer is None or layer not in self.viewer.layers:
            self._report_error("no result to save: run a restoration first (or its layer was "
                               "removed).")
            return None
        overwrite = False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the run", f"{layer.name}.tif",
                                                  "TIFF (*.tif *.tiff);;PNG (*.png)")
            if not path:
                return None
            overwrite = True  # the dialog has asked before replacing
        try:
            files = save_run(layer, path, overwrite=overwrite)
        except (DIPError, OSError) as exc:
            self._report_error(error_message(exc))
            return None
        self.status.setText("Saved " + ", ".join(str(p) for p in files.values()))
        return files

    def copy_as_python(self, *_) -> str | None:
        """Put the src_core.restore(...) call that repeats the last run on the clipboard."""
        layer = self.result_layer
        if layer is None:
            self._report_error("nothing to copy: run a restoration first.")
            return None
        code = python_call(layer)
        QApplication.clipboard().setText(code)
        self.status.setText("Copied the src_core.restore(...) call; paste it in the napari "
                            "console (Window > Console) or a notebook.")
        return code

    # ------------------------------------------------------------------ live healing
    def _live_toggled(self, *_) -> None:
        if self._filling:
            return
        if self.live.value:
            self._start_live()
        else:
            self._stop_live()

    def _start_live(self) -> None:
        """Heal the chosen mask's changes as they come (napari_dip._live); Run waits meanwhile."""
        problem = "stop the run first: live healing and a run would share the cores." if self.is_running else None
        if problem is None:
            try:
                self.live_healing = start_live(self.viewer, self.image.value, self._mask_layer(), self.capture,
                                               threaded=self.threaded, on_status=self._live_status)
            except DIPError as exc:
                problem = str(exc)
        if problem is not None:
            self._report_error(problem)
            self._set_live(False)
            return
        self.check()

    def _stop_live(self) -> None:
        """End live healing (the live layer and what it healed stay); safe when it is off."""
        live, self.live_healing = self.live_healing, None
        if live is not None:
            live.stop()
        self._set_live(False)
        self.check()

    def _set_live(self, on: bool) -> None:
        self._set_quietly(self.live, on)

    def _live_still_fits(self, *_) -> None:
        """Another image, mask or task than live healing was started on ends it."""
        live = getattr(self, "live_healing", None)
        if live is not None and (self.image.value is not live.image_layer or self._mask_layer() is not live.mask_layer):
            self._stop_live()

    def _live_status(self, text: str, error: bool = False) -> None:
        if error:
            self._report_error(text)
        else:
            self.status.setStyleSheet("")
            self.status.setText(text)

    def _live_layers_gone(self) -> bool:
        """The image, the mask or the live layer was removed (live healing has nothing to work on)."""
        live = self.live_healing
        return live is not None and any(layer not in self.viewer.layers
                                        for layer in (live.image_layer, live.mask_layer, live.layer))

    # ------------------------------------------------------------------ lifecycle
    def hideEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """A hidden panel may be a closed one: check once Qt has settled (a tab switch or a
        minimised window also hides it, and must not stop anything)."""
        super().hideEvent(event)
        if self.is_running or self.live_healing is not None:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._stop_if_closed)

    def _stop_if_closed(self) -> None:
        """The panel was closed (it left napari's window): end the run and add nothing."""
        try:
            main = self.viewer.window._qt_window
        except (AttributeError, RuntimeError):
            main = None
        if self.window() is main:
            return
        if self.live_healing is not None:
            self._stop_live()
        if self.is_running:
            self.current.abandon()

    # ------------------------------------------------------------------ plot
    def _draw_plot(self, force: bool = False) -> None:
        """Move the live PSNR curve on, at most twice a second."""
        now = time.monotonic()
        if not force and now - self._plot_drawn_at < PANEL_EVERY_S:
            return
        self._plot_drawn_at = now
        outputs = None if self.current is None else self.current.outputs
        self._curves.update(outputs.curve_list() if outputs is not None else [])
        self.canvas.draw_idle()

    # ------------------------------------------------------------------ masks
    def make_random_mask(self, *_):
        """Add a Labels layer with a random fraction of pixels painted, and use it."""
        image = self.image.value
        if image is None:
            self._report_error("no image layer: open an image first, then make a mask for it.")
            return None
        labels = random_mask_labels(image, float(self.missing_fraction.value),
                                    int(self.mask_seed.value))
        n = labels.ndim
        layer = self.viewer.add_labels(
            labels, name=f"{image.name} random mask", scale=tuple(image.scale)[-n:],
            translate=tuple(image.translate)[-n:], axis_labels=tuple(image.axis_labels)[-n:],
            metadata={MASK_FOR_KEY: image.name}, opacity=0.5)
        self.mask.reset_choices()
        self.mask.value = layer
        self.task.value = next(t.name for t in src_core.tasks.TASKS_BY_NAME.values() if t.mask == "required")
        self.image.value = image
        return layer
