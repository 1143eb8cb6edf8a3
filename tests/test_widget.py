"""The napari plugin, headless under Xvfb (pytest-xvfb): widget, worker, Stop, bad input,
samples, scripting and the manifest.  Every run is a 2-scale, 8-channel network on a
32-48 px image for a few dozen iterations."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import torch  # noqa: E402

import napari_dip  # noqa: E402
import napari_dip._widget as widget_module  # noqa: E402
from napari_dip import _samples  # noqa: E402
from napari_dip._run import LayerRun  # noqa: E402
from napari_dip._widget import DIPWidget  # noqa: E402
import src_core  # noqa: E402
from src_core import DIPError  # noqa: E402

pytestmark = pytest.mark.gui

MANIFEST = Path(napari_dip.__file__).parent / "napari.yaml"
TINY = dict(scales=2, channels=8, skip_channels=2, iterations=20, preview_every=5,
            report_every=5, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Two OpenMP threads on a shared 2-core machine spin against each other (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def errors(monkeypatch):
    """Every napari error notification the widget shows."""
    shown = []
    monkeypatch.setattr(widget_module, "show_error", shown.append)
    monkeypatch.setattr(widget_module, "show_info", lambda message: None)
    return shown


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def make_widget(viewer, threaded=False, **settings):
    widget = DIPWidget(viewer, threaded=threaded)
    viewer.window.add_dock_widget(widget, name="Deep Image Prior")
    widget.preset.value = "cpu"
    for key, value in {**TINY, **settings}.items():
        field = widget.task_fields.fields.get(key) or getattr(widget, key)  # a task's option, or a setting
        field.value = value
    return widget


def hole_widget(viewer, **settings):
    """A 32x32 8-bit image with a square hole painted in a Labels layer, and the panel on them."""
    img = (smooth((32, 32)) * 255).astype(np.uint8)
    viewer.add_image(img, name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, **{"iterations": 10, **settings})
    widget.mask.value = viewer.layers["hole"]
    return widget, img


def frames(widget) -> int:
    """Intermediate outputs the running run has collected (0 before its layers exist)."""
    outputs = None if widget.current is None else widget.current.outputs
    return 0 if outputs is None else len(outputs.frames)


def smooth(shape=(40, 48), seed=0):
    y, x = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    rng = np.random.default_rng(seed)
    return 0.5 + 0.3 * np.sin(6 * x + rng.random()) * np.cos(4 * y)


def square_labels(shape=(40, 48)):
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 12:22] = 1
    return labels


def snapshot(viewer):
    return [(layer.name, type(layer).__name__, np.array(layer.data, copy=True))
            for layer in viewer.layers]


def assert_unchanged(viewer, before, new_layers_allowed=False):
    """The user's layers (names, order, data) are as they were; new ones come after them."""
    after = snapshot(viewer)
    if new_layers_allowed:
        after = after[:len(before)]
    assert [(n, t) for n, t, _ in after] == [(n, t) for n, t, _ in before]
    for (_, _, a), (_, _, b) in zip(after, before):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- end to end

def test_run_through_widget_adds_layers(viewer, errors):
    clean = (smooth() * 60000).astype(np.uint16)
    image = viewer.add_image(clean.copy(), name="img", scale=(2.0, 0.5), translate=(5.0, 7.0),
                             axis_labels=("y", "x"))
    mask = viewer.add_labels(square_labels(), name="hole")
    viewer.add_image(clean.copy(), name="clean")
    widget = make_widget(viewer)
    widget.image.value = image
    widget.mask.value = mask
    widget.reference.value = viewer.layers["clean"]
    before = snapshot(viewer)

    widget.run()

    assert errors == [] and widget.last_error is None
    result = viewer.layers["img DIP"]
    assert result is widget.result_layer
    assert result.data.shape == (40, 48) and result.data.dtype == np.uint16
    assert tuple(result.scale) == (2.0, 0.5) and tuple(result.translate) == (5.0, 7.0)
    assert tuple(result.axis_labels) == ("y", "x")
    history = result.metadata["history"]
    assert history["iterations"] == [5, 10, 15, 20]
    assert len(history["psnr"]) == 4 and all(p is not None for p in history["psnr"])
    assert len(history["loss"]) == 20
    assert history["config"]["network"]["scales"] == 2
    assert result.metadata["task"] == "inpaint" and result.metadata["stopped"] is False

    observed = square_labels() == 0
    np.testing.assert_array_equal(result.data[observed], clean[observed])  # observed pixels kept
    assert result.data[~observed].mean() > 0.5 * clean[~observed].mean()  # the hole was filled
    summary = history["summary"]
    assert summary["classical_method"] == "biharmonic" and summary["psnr_classical"] is not None
    assert f"(biharmonic: {summary['psnr_classical']:.2f} dB): 'img DIP'." in widget.status.text()
    # one result layer, as users of other restoration plugins expect; the preview is gone
    assert [layer.name for layer in viewer.layers] == [n for n, _, _ in before] + ["img DIP"]
    assert_unchanged(viewer, before, new_layers_allowed=True)
    assert widget.run_button.enabled and not widget.stop_button.enabled

    widget.extra_layers.value = True  # on request: the iteration stack and the curve picture too
    widget.run()
    stack = viewer.layers["img DIP iterations"]
    assert stack.data.shape == (5, 40, 48) and stack.data.dtype == np.uint16
    # napari's slider shows an index: 0..4, the iterations 0, 5, ..., 20 (0: where it started)
    assert stack.axis_labels[0] == "iteration / 5" and tuple(stack.scale) == (5.0, 2.0, 0.5)
    assert tuple(stack.translate) == (0.0, 5.0, 7.0)
    assert stack.metadata["iterations"] == [0, 5, 10, 15, 20]
    curve = viewer.layers["img DIP PSNR curve"]
    assert curve.rgb and curve.data.ndim == 3 and curve.data.dtype == np.uint8
    assert curve.translate[1] > 7.0 + 48 * 0.5  # beside the image, not over it
    assert "img DIP preview" not in viewer.layers  # the result took its place
    # the second run replaced the first's result (same kind, same shape)
    assert [layer.name for layer in viewer.layers][len(before):] == [
        "img DIP iterations", "img DIP", "img DIP PSNR curve"]


def test_run_in_thread_worker_rgb_with_2d_mask(viewer, qtbot, errors):
    """The real thread_worker: the UI is released at once, events arrive as signals."""
    rgb = (np.stack([smooth((32, 32), s) for s in range(3)], -1) * 255).astype(np.uint8)
    image = viewer.add_image(rgb, name="photo", rgb=True)
    labels = square_labels((32, 32))                       # a 2D mask on an RGB image
    mask = viewer.add_labels(labels, name="hole")
    widget = make_widget(viewer, threaded=True, iterations=30)
    widget.image.value, widget.mask.value = image, mask
    before = snapshot(viewer)

    with qtbot.waitSignal(widget.run_finished, timeout=90_000) as finished:
        widget.run()
        assert widget.worker is not None
        assert not widget.run_button.enabled and widget.stop_button.enabled
        assert widget.status.text().startswith("Preparing")  # the engine prepares in the worker
        qtbot.waitUntil(lambda: "photo DIP preview" in viewer.layers, timeout=30_000)
        assert widget.status.text().startswith(("Running on", "setting up", "iteration"))
        image.data = np.zeros_like(rgb)  # editing the input mid-run must not disturb the run
        mask.data = np.zeros_like(labels)

    result = finished.args[0]
    assert errors == []
    assert result.name == "photo DIP" and result.rgb
    assert result.data.shape == (32, 32, 3) and result.data.dtype == np.uint8
    assert result.data.any()  # restored from the captured photo, not the zeroed one
    assert result.metadata["history"]["iterations"] == [5, 10, 15, 20, 25, 30]
    assert not widget.stop_button.enabled and widget.progress.value() == 1000
    assert not widget.run_button.enabled  # the mask, zeroed meanwhile, is flagged as empty
    image.data, mask.data = rgb, labels
    widget.check()
    assert widget.run_button.enabled
    assert_unchanged(viewer, before, new_layers_allowed=True)


def test_the_ui_stays_responsive_during_a_run(viewer, qtbot, errors):
    """A real thread_worker run with frequent updates: a 20 ms QTimer never waits long, and
    the main thread adds no layer per update (the iteration stack and the curve layer are made
    once, at the end)."""
    import time

    from qtpy.QtCore import QTimer

    viewer.add_image(smooth((64, 64)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((64, 64)), name="hole")
    widget = make_widget(viewer, threaded=True, iterations=150, report_every=1, preview_every=1,
                         extra_layers=True)
    widget.mask.value = viewer.layers["hole"]
    ticks, layer_counts = [], []
    timer = QTimer()
    def tick():
        ticks.append(time.perf_counter())
        if widget.is_running and frames(widget):
            layer_counts.append(len(viewer.layers))

    timer.timeout.connect(tick)
    timer.start(20)
    with qtbot.waitSignal(widget.run_finished, timeout=120_000):
        widget.run()
    timer.stop()
    gaps = np.diff(ticks)
    assert errors == [] and len(gaps) > 10
    assert gaps.max() < 1.0, f"the UI froze for {gaps.max():.2f} s"
    assert layer_counts and max(layer_counts) == 3  # img, hole, preview: nothing piles up mid-run
    assert "img DIP iterations" in viewer.layers and "img DIP PSNR curve" in viewer.layers


def test_closing_the_panel_stops_the_run_and_adds_nothing(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer(show=True)   # a panel that was never shown is never hidden
    viewer.add_image(smooth((32, 32)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, threaded=True, iterations=100_000, preview_every=2, extra_layers=True)
    widget.mask.value = viewer.layers["hole"]
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        widget.run()
        qtbot.waitUntil(lambda: frames(widget) >= 1, timeout=30_000)
        widget.hide()                       # hidden (a tab switch, a minimised window) ...
        qtbot.wait(300)
        assert widget.is_running            # ... is not closed
        widget.show()
        dock = viewer.window._dock_widgets["Deep Image Prior"]
        dock.title.close_button.click()     # the panel's own X
    qtbot.wait(200)
    assert not widget.is_running
    assert [layer.name for layer in viewer.layers] == ["img", "hole"]   # no preview, no late result
    assert errors == []


def test_stop_keeps_partial_result(viewer, qtbot, errors):
    image = viewer.add_image(smooth((32, 32)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, threaded=True, iterations=100_000, report_every=1,
                         preview_every=2, extra_layers=True)
    widget.mask.value = viewer.layers["hole"]
    assert widget.image.value is image

    with qtbot.waitSignal(widget.run_finished, timeout=60_000) as finished:
        widget.run()
        qtbot.waitUntil(lambda: frames(widget) >= 2, timeout=30_000)
        widget.stop_button.clicked.emit()   # the button's own signal
        assert not widget.stop_button.enabled

    result = finished.args[0]
    assert errors == []
    match = re.fullmatch(r"img DIP \(stopped at (\d+)\)", result.name)
    assert match, result.name
    stopped_at = int(match.group(1))
    assert 4 <= stopped_at < 100_000
    assert result.metadata["stopped"] is True
    assert result.metadata["history"]["timings"]["iterations"] == stopped_at
    assert result.data.shape == (32, 32) and result.data.dtype == np.float32
    assert widget.run_button.enabled and not widget.is_running
    assert "img DIP iterations" in viewer.layers
    # the bar and the status say how far it got, not 100%
    assert widget.progress.value() == int(1000 * stopped_at / 100_000) < 1000
    assert widget.progress.format() == "stopped at %p%"
    assert f"Stopped after {stopped_at} of 100000 iterations" in widget.status.text()


def test_worker_error_becomes_notification(viewer, qtbot, errors, monkeypatch):
    """Errors inside the worker (a RuntimeError such as CUDA out-of-memory) reach the user."""
    import src_core

    def broken(self, index=0, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, threaded=True)
    widget.mask.value = viewer.layers["hole"]
    monkeypatch.setattr(src_core.Problem, "run", broken)
    with qtbot.waitSignal(widget.run_finished, timeout=30_000) as finished:
        widget.run()
    assert finished.args[0] is None
    assert len(errors) == 1 and "ran out of memory" in errors[0]
    assert widget.run_button.enabled
    assert "img DIP" not in viewer.layers


def test_the_worker_prepares_and_finishes_and_a_refusal_touches_no_layer(viewer, qtbot, errors, monkeypatch):
    """Pressing Run only captures the layers: the engine's checks and conversion (seconds for a
    large image) run in the worker, and so do the result's conversion and the curve picture at
    the end; a refusal is reported and leaves every layer, an earlier run's too, as it was."""
    import threading

    from napari_dip import _driver, _run

    viewer.add_image(smooth((32, 32)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, threaded=True, iterations=10, extra_layers=True)
    widget.mask.value = viewer.layers["hole"]
    prepared_in, prepare = [], _driver.prepare
    monkeypatch.setattr(_driver, "prepare", lambda captured: (prepared_in.append(threading.current_thread()),
                                                              prepare(captured))[1])
    finished_in, make = [], _run.finale
    monkeypatch.setattr(_run, "finale", lambda *args, **kw: (finished_in.append(threading.current_thread()),
                                                             make(*args, **kw))[1])
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        widget.run()
    assert prepared_in and prepared_in[0] is not threading.main_thread()
    assert finished_in and finished_in[0] is not threading.main_thread()
    assert "img DIP" in viewer.layers and "img DIP PSNR curve" in viewer.layers and errors == []
    before = snapshot(viewer)

    def refuse(captured):
        raise DIPError("refused by the engine; do this instead.")

    monkeypatch.setattr(_driver, "prepare", refuse)
    with qtbot.waitSignal(widget.run_finished, timeout=60_000) as finished:
        widget.run()
    assert finished.args[0] is None
    assert widget.last_error == "refused by the engine; do this instead." and len(errors) == 1
    assert_unchanged(viewer, before)  # the earlier result, curve and stack are all still there
    assert widget.run_button.enabled and not widget.stop_button.enabled


def test_stack_all_slices_and_current_slice(viewer, errors):
    stack = np.stack([smooth((32, 32), s) for s in range(3)]).astype(np.float32)
    image = viewer.add_image(stack, name="zs", scale=(3.0, 1.0, 1.0), axis_labels=("z", "y", "x"))
    viewer.add_labels(square_labels((32, 32)), name="hole")   # one 2D mask for every slice
    widget = make_widget(viewer, iterations=10, preview_every=5, extra_layers=True)
    widget.mask.value = viewer.layers["hole"]
    assert widget.slices.enabled

    widget.slices.value = "all"
    widget.run()
    result = viewer.layers["zs DIP"]
    assert result.data.shape == (3, 32, 32) and result.data.dtype == np.float32
    assert len(result.metadata["histories"]) == 3
    assert tuple(result.axis_labels) == ("z", "y", "x")
    # napari calls its stack axis z: a z-stack, whose classical partner is 3D with the layer's scale
    assert any("over the z-stack in 3D on the voxel grid or with the spacing z 3, y 1, x 1" in n
               for n in result.metadata["notes"]), result.metadata["notes"]
    assert "stack='z', spacing=(3.0, 1.0, 1.0)" in widget.copy_as_python()  # the copy runs it alike
    frames = viewer.layers["zs DIP iterations"]
    # an iteration axis of its own in front of z, so z keeps its own slider
    assert frames.data.shape == (3, 3, 32, 32) and frames.metadata["iterations"] == [0, 5, 10]
    assert tuple(frames.axis_labels) == ("iteration / 5", "z", "y", "x")
    assert tuple(frames.scale) == (5.0, 3.0, 1.0, 1.0)
    assert viewer.dims.ndim == 4

    widget.slices.value = "current"
    viewer.dims.set_point(1, 6.0)            # world z of slice 2 (z scale 3; axis 0 is iteration)
    widget.image.value = image
    widget.run()
    # a run of another kind (one slice, not the stack) replaces nothing: the whole stack's stays
    names = [layer.name for layer in viewer.layers]
    whole_stack = ["zs DIP iterations", "zs DIP", "zs DIP PSNR curve"]
    one_slice = ["zs DIP iterations (run 2)", "zs DIP (run 2)", "zs DIP PSNR curve (run 2)"]
    assert names == ["zs", "hole", *whole_stack, *one_slice], names
    assert viewer.layers["zs DIP"].data.shape == (3, 32, 32)
    one = viewer.layers["zs DIP (run 2)"]
    assert one.data.shape == (1, 32, 32)
    assert one.metadata["slice_index"] == (2,)
    assert not any("z-stack" in n for n in one.metadata["notes"])  # one slice: a 2D answer
    assert tuple(one.translate) == (6.0, 0.0, 0.0) and tuple(one.scale) == (3.0, 1.0, 1.0)
    frames = viewer.layers["zs DIP iterations (run 2)"]
    assert frames.data.shape == (3, 1, 32, 32) and tuple(frames.translate) == (0.0, 6.0, 0.0, 0.0)
    widget.run()  # the same slice again: this one replaces the last one's layers, nothing piles up
    names = [layer.name for layer in viewer.layers]
    assert names == ["zs", "hole", *whole_stack, "zs DIP iterations (run 2)", "zs DIP (run 2)",
                     "zs DIP PSNR curve (run 2)"], names
    assert errors == []

    widget.slices.value = "all"
    run = LayerRun(viewer, widget.capture())
    run.stop()                      # Stop pressed while the run was still being prepared
    run.start(threaded=False)
    assert run.outcome.stopped and run.outcome.histories == []
    assert run.result.name == "zs DIP (stopped before slice 1/3)"


def test_the_panel_fits_a_laptop_screen_and_explains_itself(viewer):
    widget = make_widget(viewer)
    viewer.window._qt_window.resize(1366, 768)
    # Run, Stop and the progress bar stay outside the scroll area, and all of it fits 768 px
    assert widget.minimumSizeHint().height() < 500
    assert widget.scroll.widget().isAncestorOf(widget.scales.native)
    assert not widget.scroll.widget().isAncestorOf(widget.run_button.native)
    # the live plot, Save run and Copy as Python stay in view too (never scrolled below the fold)
    for part in (widget.canvas, widget.save_button.native, widget.copy_button.native, widget.progress):
        assert not widget.scroll.widget().isAncestorOf(part)
    # every task reads whole in its combo (it was cut to "sr: super-resolution: a sharper i")
    combo = widget.task.native
    widest = max(combo.fontMetrics().horizontalAdvance(combo.itemText(i)) for i in range(combo.count()))
    assert widest <= combo.sizeHint().width() - 20, (widest, combo.sizeHint().width())
    assert widget.advanced.native.isHidden()                 # advanced settings start folded
    widget.advanced_toggle.setChecked(True)
    assert not widget.advanced.native.isHidden()
    controls = [w for w in vars(widget).values() if hasattr(w, "tooltip") and hasattr(w, "native")
                and not isinstance(w, type(widget.preset_info))]
    assert len(controls) > 20
    assert [w.label for w in controls if not w.tooltip and w.widget_type != "Container"] == []
    # the help link opens docs/plugin.md (the checkout's copy in an editable install)
    from urllib.parse import unquote, urlparse

    link = re.search(r'href="([^"]+)"', widget.help_label.text()).group(1)
    assert link.endswith("docs/plugin.md") and Path(unquote(urlparse(link).path)).is_file()
    widget.task.value = "inpaint"
    assert not widget.mask.native.isHidden() and widget.mask_seed.native.isHidden()
    assert not widget.region.native.isHidden()
    widget.region.value = "damage"
    widget.task.value = "denoise"
    assert widget.mask.native.isHidden() and widget.missing_fraction.native.isHidden()
    assert widget.region.value == "whole" and "damage" not in widget.region.choices  # no mask to box
    assert widget.tile.native.isHidden()
    widget.region.value = "tiles"
    assert not widget.tile.native.isHidden()


def test_keep_observed_is_a_control_and_the_task_follows_the_preset(viewer, errors):
    widget, img = hole_widget(viewer)
    observed = square_labels((32, 32)) == 0
    assert widget.keep_observed.value is True
    widget.run()
    kept = viewer.layers["img DIP"].data
    assert np.array_equal(kept[observed], img[observed])      # the input where it was observed
    widget.keep_observed.value = False
    widget.run()
    raw = [layer for layer in viewer.layers if layer.name.startswith("img DIP") and layer.data is not kept
           and layer.metadata.get("napari_dip") == "result"][-1].data
    assert not np.array_equal(raw[observed], img[observed])   # the network's output everywhere
    assert errors == []
    widget.preset.value = "denoise"
    assert widget.task.value == "denoise" and widget.early_stop.value is True
    assert widget.keep_observed.native.isHidden()
    widget.preset.value = "table1"
    assert widget.task.value == "random"
    widget.preset.value = "cpu"                                # the CPU preset fits every task
    assert widget.task.value == "random"


def test_restore_defaults_puts_the_preset_back(viewer):
    widget = make_widget(viewer)
    widget.preset.value = "table1"
    widget.lr.value, widget.scales.value, widget.threads.value = 0.5, 2, 1
    widget.defaults_button.clicked.emit()
    assert widget.lr.value == pytest.approx(0.001) and widget.scales.value == 5
    assert widget.threads.value == 0


def test_random_task_and_random_mask_button(viewer, errors):
    viewer.add_image((smooth((32, 32)) * 255).astype(np.uint8), name="img")
    widget = make_widget(viewer, iterations=10)
    widget.task.value = "random"
    assert widget.mask.native.isHidden() and not widget.missing_fraction.native.isHidden()
    widget.run()
    assert errors == []
    assert "img DIP input (50% missing)" in viewer.layers
    history = viewer.layers["img DIP"].metadata["history"]
    assert history["psnr"][-1] is not None  # the clean input is the reference

    layer = widget.make_random_mask()
    assert layer.name == "img random mask" and layer.data.shape == (32, 32)
    assert 0.4 < layer.data.mean() < 0.6
    assert widget.mask.value is layer and widget.task.value == "inpaint"


# ----------------------------------------------------------------------------- bad input

def run_expecting_error(viewer, widget, errors, *needles, flagged=True):
    """``flagged``: the panel shows the problem before Run and keeps Run disabled; a run
    started anyway (from code) gives the same message and changes nothing."""
    before = snapshot(viewer)
    if flagged:
        assert not widget.run_button.enabled
        for needle in needles:
            assert needle in widget.check_label.text(), widget.check_label.text()
    widget.run()
    assert len(errors) == 1, errors
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert widget.last_error and not widget.is_running
    assert widget.run_button.enabled is not flagged
    assert_unchanged(viewer, before)


def test_no_image_layer(viewer, errors):
    widget = make_widget(viewer)
    assert widget.image.value is None
    assert "no image layer" in widget.check_label.text()
    run_expecting_error(viewer, widget, errors, "no image layer")


def test_mask_of_another_shape(viewer, errors):
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((30, 32)), name="hole")
    widget = make_widget(viewer)
    widget.mask.value = viewer.layers["hole"]
    run_expecting_error(viewer, widget, errors, "mask 'hole' has shape (30, 32)", "(32, 32)")


def test_empty_mask_for_inpainting(viewer, errors):
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="hole")
    widget = make_widget(viewer)
    widget.mask.value = viewer.layers["hole"]
    run_expecting_error(viewer, widget, errors, "no painted pixels")  # flagged before Run, as the others


def test_the_engine_s_warnings_are_shown_in_the_status_and_as_a_notification(viewer, errors, monkeypatch):
    image = smooth((32, 32)).astype(np.float32)
    image[3, 4:8] = np.nan                                       # 4 bad pixels: treated as missing
    viewer.add_image(image, name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    warned = []
    monkeypatch.setattr(widget_module, "show_warning", warned.append)
    widget = make_widget(viewer, iterations=10)
    with pytest.warns(UserWarning, match="non-finite"):
        widget.run()
    assert errors == [] and "img DIP" in viewer.layers
    assert [w for w in warned if "4 non-finite pixel values (NaN/inf) were treated as missing" in w]
    assert widget.status.text().startswith("\u26a0 4 non-finite pixel values") and "Done in" in widget.status.text()


def test_a_hidden_mask_is_neither_used_nor_flagged_and_a_new_image_gets_its_own(viewer, errors):
    """A Labels layer picked for inpainting is not used by a task that hides the mask field
    (denoise, sr, deconvolve): not in the run, its metadata or its copied code; one that no
    longer fits after another image is chosen is dropped, not left to block Run."""
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, iterations=10)
    assert widget.mask.value is viewer.layers["hole"]          # picked: the only fitting Labels layer
    widget.task.value = "denoise"
    assert widget.mask.native.isHidden() and widget.check() == []
    widget.run()
    result = viewer.layers["img DIP"]
    assert errors == [] and result.metadata["mask"] is None
    assert "mask" not in widget.copy_as_python()
    tiny = viewer.add_image(smooth((16, 16)), name="tiny")      # the mask is (32, 32): stale for it
    widget.image.value = tiny
    assert widget.check() == [] and widget.run_button.enabled
    widget.task.value = "inpaint"                               # shown again: nothing fits, so it says so
    assert widget.mask.value is None and any("needs a mask" in p for p in widget.check())
    widget.image.value = viewer.layers["img"]                   # back: its own mask is picked again
    assert widget.mask.value is viewer.layers["hole"] and widget.check() == []


def test_3d_mask_on_2d_image(viewer, errors):
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(np.ones((3, 32, 32), np.uint8), name="hole")
    widget = make_widget(viewer)
    widget.mask.value = viewer.layers["hole"]
    run_expecting_error(viewer, widget, errors, "has shape (3, 32, 32)",
                        "more dimensions than the image")


def test_reference_of_another_shape(viewer, errors):
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    viewer.add_image(smooth((32, 40)), name="clean")
    widget = make_widget(viewer)
    widget.image.value = viewer.layers["img"]
    widget.mask.value = viewer.layers["hole"]
    widget.reference.value = viewer.layers["clean"]
    run_expecting_error(viewer, widget, errors, "reference 'clean', image 'img': reference shape (32, 40)")


def test_the_estimate_is_measured_on_this_machine_in_the_background(viewer, qtbot, errors, monkeypatch, tmp_path):
    """Before Run, the panel's estimate comes from a calibration of this machine (the prior's
    figure until then), made off the main thread; the check after it says "measured here"."""
    monkeypatch.setenv("DIP_CACHE_DIR", str(tmp_path))  # nothing measured yet for these settings
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    import threading

    calibrated_in = []
    real = src_core.timing._calibrate
    monkeypatch.setattr(src_core.timing, "_calibrate",
                        lambda *a: calibrated_in.append(threading.current_thread()) or real(*a))
    widget = make_widget(viewer, threaded=True, iterations=300)
    widget.mask.value = viewer.layers["hole"]
    qtbot.waitUntil(lambda: "measured here" in widget.check_label.text()
                    and "not measured" not in widget.check_label.text(), timeout=60_000)
    assert calibrated_in and all(t is not threading.main_thread() for t in calibrated_in)
    assert re.match(r"Estimate: about \d+ s \(.* s/it x 300 it on cpu, 1 thread, measured here\)",
                    widget.check_label.text()), widget.check_label.text()
    # a finished run teaches later estimates in napari how its speed compares with the calibration
    assert src_core.timing.context_factor("napari") == 1.0
    shown = widget.shown_estimate
    with qtbot.waitSignal(widget.run_finished, timeout=120_000):
        widget.run()
    measured = widget.result_layer.metadata["history"]["timings"]["s_per_iteration"]
    assert src_core.timing.context_factor("napari") == pytest.approx(
        min(4.0, max(0.25, measured / shown.calibrated_step_s)))
    assert errors == []


@pytest.fixture
def slow_machine(monkeypatch):
    """A machine where every iteration takes 0.2 s and setting up 0.1 s, as measured."""
    monkeypatch.setattr(src_core.timing, "step_time",
                        lambda *a, **k: src_core.timing.StepTime(0.2, 0.1, True))
    monkeypatch.setattr(src_core.timing, "classical_seconds", lambda *a, **k: 0.0)


def test_iterations_on_auto_fit_the_time_budget_and_the_run_is_what_the_panel_said(viewer, errors, slow_machine):
    """The cpu preset's count is auto: the panel says how many iterations fit the time budget
    here, and the run, its history and its copy as Python have exactly that count."""
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer)   # (a count given: no budget)
    assert not widget.fit_budget.value and widget.budget.native.isHidden()
    widget.preset.value = "table1"
    assert not widget.fit_budget.value and widget.iterations.value == 11000  # the paper's count
    widget.preset.value = "cpu"   # the preset's own values: a time budget
    assert widget.fit_budget.value and not widget.budget.native.isHidden()
    for key, value in TINY.items():
        if key != "iterations":
            getattr(widget, key).value = value
    widget.mask.value = viewer.layers["hole"]
    widget.budget.value = 0.25   # 15 s: (15 - 0.1) / 0.2 = 74 iterations
    text = widget.check_label.text()
    assert "x 74 it on cpu" in text and "budget: 74 iterations fit about 15 s here (0.2 s/it" in text, text
    assert widget.iterations.value == 74 and widget.fit_budget.value  # shown, still the budget's
    widget.run()
    history = widget.result_layer.metadata["history"]
    assert history["config"]["iterations"] == 74 and history["iterations"][-1] == 74
    assert "iterations=74" in widget.copy_as_python()
    widget.iterations.value = 30    # a count given is the count run
    assert not widget.fit_budget.value and widget.budget.native.isHidden()
    assert "budget:" not in widget.check_label.text() and "x 30 it on cpu" in widget.check_label.text()
    assert errors == []


def test_restore_layer_fits_the_default_budget_as_the_api_does(viewer, slow_machine):
    viewer.add_image((smooth() * 255).astype(np.uint8), name="img")
    viewer.add_labels(square_labels(), name="hole")
    small = dict(scales=2, down_channels=8, up_channels=8, skip_channels=2, report_every=10, device="cpu")
    result = napari_dip.restore_layer(viewer, "img", "hole", budget="12s", **small)
    assert result.metadata["history"]["config"]["iterations"] == 59   # (12 - 0.1) / 0.2
    with pytest.raises(DIPError, match="give iterations or a budget, not both"):
        napari_dip.restore_layer(viewer, "img", "hole", budget="12s", iterations=5, **small)


def test_napari_s_in_progress_animation_holds_still_while_a_run_computes(viewer, qtbot, errors):
    """Its frames repaint the window (through the CPU under software OpenGL), which slowed runs
    1.4-1.8x; the Activity entry itself stays, with its Cancel."""
    from qtpy.QtGui import QMovie

    viewer.add_image(smooth((32, 32)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, threaded=True, iterations=100_000, report_every=1)
    widget.mask.value = viewer.layers["hole"]
    movie = viewer.window._qt_window._activity_dialog._toggleButton._inProgressIndicator.movie()
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=60_000)  # it computes
    assert movie.state() == QMovie.MovieState.Paused
    assert widget.current.activity is not None  # the entry (and its Cancel) is there
    with qtbot.waitSignal(widget.run_finished, timeout=60_000):
        widget.stop()
    assert errors == []


def test_too_many_scales_flagged_before_running(viewer, errors):
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer)
    widget.mask.value = viewer.layers["hole"]
    assert "\u26a0" not in widget.check_label.text()  # nothing wrong: only the time estimate
    assert re.match(r"Estimate: about \d+ s \(.* s/it x \d+ it on cpu", widget.check_label.text())
    widget.scales.value = 5
    assert re.search(r"32x32 pixels is too small for a 5-scale network \(it needs at least \d+ pixels",
                     widget.check_label.text())
    assert "at most 4 scales" in widget.check_label.text()
    # pressing Run anyway gives the engine's own message
    run_expecting_error(viewer, widget, errors, "too small for a 5-scale network")


# ----------------------------------------------------------------------------- presets

def test_preset_fills_fields_and_keeps_hidden_settings(viewer):
    from src_core import PRESETS

    widget = make_widget(viewer)
    for name in ("table1", "vase", "library"):
        widget.preset.value = name
        cfg = PRESETS[name].config
        assert widget.lr.value == pytest.approx(cfg.lr)
        assert widget.iterations.value == cfg.iterations
        assert widget.scales.value == cfg.network.scales
        assert widget.input_kind.value == cfg.input_kind
        built = widget.build_config()   # untouched fields keep the preset exactly
        assert built.network == cfg.network and built.input_kind == cfg.input_kind
        assert built.preset == name
    assert isinstance(widget.build_config().network.down_channels, list)  # library's lists
    widget.scales.value = 4   # per-scale lists follow the depth
    built = widget.build_config()
    assert built.network.down_channels == PRESETS["library"].config.network.down_channels[:4]
    widget.channels.value = 24  # a changed field overrides the preset at every scale
    assert widget.build_config().network.down_channels == 24


# ----------------------------------------------------------------------------- samples, manifest

def test_samples_load():
    kate = _samples.kate_sample()
    assert [(d.shape, t) for d, _, t in kate] == [
        ((512, 512, 3), "image"), ((512, 512, 3), "image"), ((512, 512), "labels")]
    corrupted, missing = kate[1][0], kate[2][0]
    assert 0.02 < missing.mean() < 0.1 and not corrupted[missing.astype(bool)].any()
    house = _samples.house_sample()
    assert [d.shape for d, _, _ in house] == [(256, 256)] * 3
    assert abs(house[2][0].mean() - 0.5) < 0.02
    cells = _samples.cells_sample()
    assert [(d.shape, d.dtype) for d, _, _ in cells] == [((256, 256), np.uint16)] * 2
    noisy, clean = cells[1][0].astype(float), cells[0][0].astype(float)
    assert 1.0 < np.std(noisy - clean) < 10.0   # visibly noisy
    lapse = _samples.cells_timelapse_sample()
    assert lapse[1][0].shape == (8, 128, 128)
    data, kwargs, kind = _samples.random_mask(napari.layers.Image(np.zeros((4, 32, 32, 3)),
                                                                  rgb=True, name="rgb"))
    assert kind == "labels" and data.shape == (4, 32, 32) and kwargs["name"] == "rgb random mask"


def test_sample_through_napari_picks_mask_and_reference(viewer):
    viewer.open_sample("napari-dip", "house")
    assert [layer.name for layer in viewer.layers] == [
        "house clean (reference)", "house (50% missing)", "house missing pixels"]
    widget = make_widget(viewer)
    assert widget.image.value.name == "house (50% missing)"
    assert widget.mask.value.name == "house missing pixels"
    assert widget.reference.value.name == "house clean (reference)"
    viewer.layers.clear()
    assert widget.image.value is None and widget.mask.value is None
    viewer.open_sample("napari-dip", "kate")       # opened while the widget is docked
    assert widget.image.value.name == "kate (text-corrupted)"
    assert widget.mask.value.name == "kate mask"
    assert widget.reference.value.name == "kate clean (reference)"


def test_manifest_validates():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    pm.validate_imports()
    assert pm.name == "napari-dip"
    assert {w.display_name for w in pm.contributions.widgets} == {"Restore image", "Random mask"}
    assert {s.key for s in pm.contributions.sample_data} >= {"kate", "house", "cells"}
    installed = PluginManifest.from_distribution("napari-dip")   # the entry point works
    assert installed.name == pm.name


def _menu_paths(viewer) -> list:
    """Every entry of napari's menu bar as 'File > Open Sample > ...' (submenus filled first)."""
    def walk(menu, path):
        for action in menu.actions():
            text = action.text().replace("&", "")
            if action.menu() is not None:
                action.menu().aboutToShow.emit()
                yield from walk(action.menu(), [*path, text])
            elif text:
                yield " > ".join([*path, text])
    return list(walk(viewer.window._qt_window.menuBar(), []))


def test_the_docs_name_the_menus_napari_shows(viewer):
    paths = _menu_paths(viewer)
    ours = [p for p in paths if "> Deep Image Prior >" in p]
    widget = "Plugins > Deep Image Prior > Restore image"
    kate = "File > Open Sample > Deep Image Prior > Kate, text-corrupted photo + mask (DIP Fig. 7)"
    assert widget in ours and kate in ours, ours
    guide = (Path(__file__).parents[1] / "docs" / "plugin.md").read_text()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for text in (guide, readme):
        said = set(re.findall(r"(?:Plugins|File|Layers|View) > [^*\n]+", text.replace("\n", " ")))
        assert said, "the docs name no menu"
        for path in said:  # every menu path the docs give is one napari shows (or its start)
            path = path.strip().rstrip(".,")
            assert any(p == path or p.startswith(path + " > ") for p in paths), (path, ours)
    assert widget in guide.replace("\n", " ")


def test_plugin_menu_widget_runs_through_public_proxy(make_napari_viewer, monkeypatch, errors):
    """Docked the way the plugin menu does it (napari hands over a public-only proxy)."""
    monkeypatch.setenv("NAPARI_DIP_NO_THREAD", "1")
    viewer = make_napari_viewer()
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Restore image")
    assert isinstance(widget, DIPWidget) and not widget.threaded
    for key, value in TINY.items():
        getattr(widget, key).value = value
    widget.mask.value = viewer.layers["hole"]
    widget.run()
    assert errors == [] and "img DIP" in viewer.layers


# ----------------------------------------------------------------------------- scripting

def test_restore_layer_from_console(viewer):
    viewer.add_image((smooth() * 255).astype(np.uint8), name="img", scale=(2.0, 2.0))
    viewer.add_labels(square_labels(), name="hole")
    result = napari_dip.restore_layer(viewer, "img", "hole", preset="cpu", scales=2,
                                      down_channels=8, up_channels=8, skip_channels=2,
                                      iterations=12, report_every=4, snapshot_every=6,
                                      device="cpu", extra_layers=True)
    assert result is viewer.layers["img DIP"]
    assert result.data.dtype == np.uint8 and tuple(result.scale) == (2.0, 2.0)
    assert result.metadata["history"]["iterations"] == [4, 8, 12]
    assert viewer.layers["img DIP iterations"].data.shape == (3, 40, 48)  # iterations 0, 6, 12
    assert "img DIP PSNR curve" in viewer.layers
    with pytest.raises(DIPError, match="no image layer named 'nope'"):
        napari_dip.restore_layer(viewer, "nope", "hole")
    with pytest.raises(DIPError, match="no painted pixels"):
        viewer.add_labels(np.zeros((40, 48), np.uint8), name="empty")
        napari_dip.restore_layer(viewer, "img", "empty", preset="cpu")


def test_restore_layer_takes_the_task_options(viewer):
    viewer.add_image((smooth((20, 24)) * 255).astype(np.uint8), name="small", scale=(2.0, 2.0))
    viewer.add_image(np.ones((5, 5)), name="bead")
    small = dict(preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=4,
                 report_every=2, device="cpu")
    big = napari_dip.restore_layer(viewer, "small", task="sr", factor=2, **small)
    assert big.data.shape == (40, 48) and tuple(big.scale) == (1.0, 1.0)
    sharp = napari_dip.restore_layer(viewer, "small", task="deconvolve", psf=viewer.layers["bead"],
                                     keep_earlier=True, **small)
    assert sharp.data.shape == (20, 24)
    with pytest.raises(DIPError, match="option of task 'sr'"):
        napari_dip.restore_layer(viewer, "small", task="denoise", factor=2, **small)
    with pytest.raises(DIPError, match="negative"):
        napari_dip.restore_layer(viewer, "small", task="deconvolve", psf=-np.ones((3, 3)), **small)


def test_restore_layer_without_waiting_reports_to_the_activity_dock(viewer, qtbot):
    """wait=False: napari stays usable, progress shows in the Activity dock, Cancel there is
    Stop (the partial result is kept)."""
    from napari.utils import progress

    viewer.add_image(smooth((32, 32)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    run = napari_dip.restore_layer(viewer, "img", "hole", preset="cpu", scales=2,
                                   down_channels=8, up_channels=8, skip_channels=2,
                                   iterations=100_000, report_every=2, device="cpu", threads=1,
                                   wait=False)
    assert run.worker is not None and not run.done       # returned at once
    entries = [p for p in progress._all_instances if p is run.activity]
    assert entries and entries[0].total == 100_000
    qtbot.waitUntil(lambda: run.activity is not None and run.activity.n >= 4, timeout=30_000)
    assert "setting up" not in run.activity.desc  # the step's message went when the progress came
    with qtbot.waitSignal(run.worker.finished, timeout=30_000):
        run.activity.cancel()                            # the Activity dock's Cancel button
    assert run.done and run.activity is None
    assert run.outcome.stopped and run.result is viewer.layers[run.result.name]
    assert run.result.name.startswith("img DIP (stopped at ")
    assert run not in progress._all_instances


# ----------------------------------------------------------------------------- lifecycle, layers

def test_restoring_only_around_the_mask_pastes_back_seamlessly(viewer, errors):
    clean = (smooth((96, 120)) * 60000).astype(np.uint16)
    viewer.add_image(clean, name="img", translate=(10.0, 20.0), scale=(0.5, 0.5))
    labels = np.zeros((96, 120), np.uint8)
    labels[40:46, 50:58] = 1
    viewer.add_labels(labels, name="hole")
    widget = make_widget(viewer, preview_every=5, extra_layers=True)
    widget.mask.value = viewer.layers["hole"]
    whole_estimate = widget.check_label.text()
    widget.region.value = "damage"
    # 2 scales: 8 px of context around the hole, grown to the network's minimum
    assert "Estimate for the 22x24 box:" in widget.check_label.text(), widget.check_label.text()
    assert widget.check_label.text() != whole_estimate
    widget.run()
    assert errors == []
    result = viewer.layers["img DIP"]
    assert result.data.shape == (96, 120) and result.data.dtype == np.uint16
    assert result.metadata["region"] == [[32, 54], [42, 66]]
    outside = np.ones((96, 120), bool)
    outside[32:54, 42:66] = False
    np.testing.assert_array_equal(result.data[outside], clean[outside])   # untouched outside
    hole = labels == 1
    np.testing.assert_array_equal(result.data[~hole], clean[~hole])       # observed kept
    assert result.data[hole].mean() > 0.5 * clean[hole].mean()             # the hole filled
    stack = viewer.layers["img DIP iterations"]                           # placed on the box
    assert stack.data.shape[1:] == (22, 24)
    assert tuple(stack.translate)[1:] == (10.0 + 32 * 0.5, 20.0 + 42 * 0.5)


def test_a_new_run_replaces_the_last_ones_layers_unless_kept(viewer, errors):
    viewer.add_image(smooth((32, 32)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, iterations=10)
    widget.mask.value = viewer.layers["hole"]
    widget.run()
    first = viewer.layers["img DIP"]
    first.name = "img DIP mine"                    # renamed: the user's now, always kept
    widget.run()
    widget.keep_earlier.value = True
    widget.run()
    names = [layer.name for layer in viewer.layers]
    assert names == ["img", "hole", "img DIP mine", "img DIP", "img DIP (run 2)"], names
    assert not any(re.search(r"\[\d+\]", name) for name in names)
    assert errors == []


def test_run_is_disabled_until_the_inputs_fit_and_the_choice_never_jumps(viewer, errors):
    viewer.add_image(smooth((32, 32)), name="a")
    viewer.add_image(smooth((32, 32)), name="b")
    viewer.add_labels(square_labels((32, 30)), name="hole")
    widget = make_widget(viewer)
    widget.image.value = viewer.layers["a"]
    widget.mask.value = viewer.layers["hole"]
    assert not widget.run_button.enabled                      # flagged before Run
    assert "mask 'hole' has shape (32, 30)" in widget.check_label.text()
    viewer.layers.remove("hole")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget.mask.value = viewer.layers["hole"]
    assert widget.run_button.enabled and "\u26a0" not in widget.check_label.text()
    viewer.layers.remove("a")                                 # the chosen image goes away
    assert widget.image.value is None                         # not silently "b"
    assert not widget.run_button.enabled and "was removed" in widget.status.text()
    viewer.layers.selection.active = viewer.layers["b"]
    viewer.layers.move(1, 0)                                   # other layer events: still empty
    assert widget.image.value is None
    assert errors == []


def test_the_run_holds_its_layers_when_they_are_removed(viewer, qtbot, errors):
    image = viewer.add_image(smooth((32, 32)).astype(np.float32), name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, threaded=True, iterations=40, preview_every=10)
    widget.mask.value = viewer.layers["hole"]
    with qtbot.waitSignal(widget.run_finished, timeout=90_000) as finished:
        widget.run()
        viewer.layers.remove("hole")
        viewer.layers.remove(image)
    result = finished.args[0]
    assert errors == [] and result is not None
    assert result.data.shape == (32, 32) and result.metadata["history"]["iterations"][-1] == 40


def test_a_sample_sets_its_task(viewer):
    widget = make_widget(viewer)
    viewer.open_sample("napari-dip", "cells")
    assert widget.image.value.name == "noisy cells" and widget.task.value == "denoise"
    viewer.open_sample("napari-dip", "house")
    assert widget.image.value.name == "house (50% missing)" and widget.task.value == "inpaint"


# ----------------------------------------------------------------------------- after a run

def test_save_run_and_copy_as_python(viewer, errors, tmp_path):
    clean = (smooth((32, 32)) * 60000).astype(np.uint16)
    viewer.add_image(clean, name="img")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, iterations=10)
    widget.mask.value = viewer.layers["hole"]
    assert not widget.save_button.enabled and not widget.copy_button.enabled
    widget.run()
    assert widget.save_button.enabled and widget.copy_button.enabled
    result = viewer.layers["img DIP"]

    files = widget.save_last_run(path=tmp_path / "out.tif")
    assert sorted(p.name for p in files.values()) == ["out.dip-psnr.png", "out.dip.json", "out.tif"]
    import json

    import src_core

    saved = src_core.read_image(files["image"])
    assert saved.dtype == np.uint16 and np.array_equal(saved, result.data)
    record = json.loads(files["history"].read_text())
    assert src_core.RunConfig.from_dict(record["config"]).network.scales == 2
    assert record["histories"][0]["iterations"] == [5, 10] and record["task"] == "inpaint"
    assert widget.save_last_run(path=tmp_path / "out.tif") is None       # never overwritten
    assert "already exist" in errors[-1]
    assert widget.save_last_run(path=tmp_path / "out.jpg") is None
    assert "TIFF or PNG" in errors[-1]

    code = widget.copy_as_python()
    from qtpy.QtWidgets import QApplication

    assert QApplication.clipboard().text() == code
    assert "src_core.restore(image, mask, task='inpaint'" in code and "preset='cpu'" in code
    exec(code, {"viewer": viewer})                                        # it runs as copied
    again = viewer.layers["img DIP (again)"].data
    assert again.dtype == np.uint16 and again.shape == (32, 32)
    hole = square_labels((32, 32)) == 1
    np.testing.assert_array_equal(again[~hole], clean[~hole])
    diff = np.abs(again[hole].astype(float) - result.data[hole].astype(float)).mean()
    assert diff < 0.02 * 60000, diff                                     # the same run again


TASK_OPTIONS = [(task.name, option) for task in src_core.tasks.TASKS_BY_NAME.values() for option in task.options]


@pytest.mark.parametrize("task,option", TASK_OPTIONS, ids=[f"{t}-{o.name}" for t, o in TASK_OPTIONS])
def test_copy_as_python_and_the_saved_run_keep_every_task_option(viewer, errors, tmp_path, monkeypatch,
                                                                  task, option):
    """For every option the task registry declares, a value other than its default reaches the
    copied call (executed: the restore it makes gets that value and gives the widget's size) and
    the saved .dip.json (SR at factor 2 copied as the default 4x; a PSF of sigma 1.5 as 2.0)."""
    import json

    value = option.kind(option.default + 1 if option.kind is int else option.default * 0.75 or option.low + 1)
    assert value != option.default and option.low <= value <= option.high
    plane = (smooth((24, 24)) * 255).astype(np.uint8)
    if option.name == "psf_z":  # a 3D PSF: for a z-stack, run on all its slices
        viewer.add_image(np.stack([plane] * 4), name="img", axis_labels=("z", "y", "x"))
    else:
        viewer.add_image(plane, name="img")
    widget = make_widget(viewer, task=task, iterations=10, **{option.name: value})
    widget.slices.value = "all"
    assert widget.task_options()[option.name] == value
    widget.run()
    result = widget.result_layer
    assert errors == [] and result.metadata["task_options"][option.name] == value
    files = widget.save_last_run(path=tmp_path / "out.tif")
    assert json.loads(files["history"].read_text())["task_options"][option.name] == value

    seen, restore = [], src_core.restore
    monkeypatch.setattr(src_core, "restore", lambda *a, **kw: (seen.append(kw), restore(*a, **kw))[1])
    namespace = {"viewer": viewer}
    exec(widget.copy_as_python(), namespace)
    assert seen and seen[0][option.name] == value
    again = namespace["result"].image
    assert again.shape == result.data.shape and again.dtype == result.data.dtype
    assert namespace["result"].config.to_dict() == result.metadata["config"]
    diff = np.abs(again.astype(float) - result.data.astype(float)).mean()
    assert diff < 0.02 * 255, diff                                        # the same run again


def test_the_task_fields_come_from_the_task_registry(viewer, monkeypatch):
    """A task added to src_core.tasks appears in the panel with a field for its option, and the
    fields of other tasks hide: the plugin names no task."""
    from src_core.operators import Identity
    from src_core.tasks import TASKS_BY_NAME, Option, Task

    sharpen = Task("sharpen", "a test task", mask="optional", presets=("restore",), classical=None,
                   keep_observed=False, noisy=True, build=lambda amount: Identity(),
                   options=(Option("amount", 1.5, "how much to sharpen", kind=float, label="amount",
                                   low=0.0, high=5.0),))
    monkeypatch.setitem(TASKS_BY_NAME, "sharpen", sharpen)
    viewer.add_image(smooth(), name="img")
    widget = make_widget(viewer)
    assert "sharpen" in widget.task.choices
    widget.task.value = "sharpen"
    shown = lambda w: not w.native.isHidden()  # noqa: E731
    fields = widget.task_fields
    assert shown(fields.field("amount")) and not shown(fields.field("factor")) and not shown(widget.mask)
    assert widget.early_stop.value  # a noisy task stops early by default
    fields.field("amount").value = 2.5
    assert widget.task_options() == {"amount": 2.5}
    widget.task.value = "sr"
    assert not shown(fields.field("amount")) and widget.task_options() == {"factor": 4}


def test_another_network_and_data_term_run_and_copy_as_they_ran(viewer, errors):
    """Advanced: the Deep Decoder and the Poisson data term reach the run, and Copy as Python
    repeats that run (its settings and the PSF layer it used)."""
    clean = smooth() * 200 + 10
    viewer.add_image(clean, name="cells")
    psf = np.zeros((2, 9, 9))
    psf[:, 3:6, 3:6] = 1.0
    viewer.add_image(psf, name="bead")
    widget = make_widget(viewer, task="deconvolve", iterations=10)
    widget.image.value = viewer.layers["cells"]
    widget.task_fields.layers["psf"].value = viewer.layers["bead"]
    shown = lambda w: not w.native.isHidden()  # noqa: E731
    assert not shown(widget.photon_gain)
    widget.architecture.value = "decoder"
    assert widget.channels.value == src_core.DecoderConfig().channels  # the decoder's own defaults
    assert not shown(widget.skip_channels) and shown(widget.upsample)
    widget.scales.value, widget.channels.value = 2, 8
    widget.fidelity.value = "poisson"
    widget.photon_gain.value, widget.photon_offset.value = 2.0, 5.0
    assert shown(widget.photon_gain)
    config = widget.build_config()
    assert (config.network.architecture, config.network.scales, config.network.channels) == ("decoder", 2, 8)
    assert (config.fidelity, config.photon_gain, config.photon_offset) == ("poisson", 2.0, 5.0)
    assert widget.check() == []
    widget.run()
    assert errors == []
    ran = viewer.layers["cells DIP"].metadata
    assert ran["config"]["network"]["architecture"] == "decoder" and ran["config"]["fidelity"] == "poisson"
    code = widget.copy_as_python()
    assert "psf=viewer.layers['bead'].data[1]" in code  # the stack's middle plane, as the run took it
    namespace = {"viewer": viewer}
    exec(code, namespace)
    assert namespace["result"].config.to_dict() == ran["config"]


def test_a_warm_started_stack_counts_its_shorter_slices_in_the_progress(viewer, errors, monkeypatch):
    """With the cpu preset a stack's later slices start warm and run a third of the iterations:
    the progress bar counts what runs, rising to exactly its end."""
    monkeypatch.setattr(widget_module, "PANEL_EVERY_S", 0.0)
    viewer.add_image(np.stack([smooth((32, 32), s) for s in range(3)]).astype(np.float32), name="zs")
    widget = make_widget(viewer, iterations=9, report_every=3, preview_every=0)
    widget.image.value, widget.task.value, widget.slices.value = viewer.layers["zs"], "random", "all"
    values = []
    widget.progress.setValue = lambda v, real=widget.progress.setValue: (values.append(v), real(v))
    widget.run()
    assert errors == [] and widget.current.total == 9 + 2 * 3
    ran = [h["config"]["iterations"] for h in viewer.layers["zs DIP"].metadata["histories"]]
    assert ran == [9, 3, 3]
    shown = [v for v in values if v > 0]
    assert shown == sorted(shown) and shown[-1] == 1000


def test_a_hand_painted_mask_of_the_image_size_is_picked(viewer):
    viewer.add_image(smooth((32, 32)), name="img")
    viewer.add_labels(np.zeros((16, 16), np.uint8), name="other size")
    widget = make_widget(viewer)
    assert widget.mask.value is None                       # nothing fits: nothing picked
    painted = viewer.add_labels(square_labels((32, 32)), name="Labels")
    assert widget.mask.value is painted


def test_super_resolution_result_covers_the_input_at_a_finer_scale(viewer, errors):
    image = viewer.add_image((smooth((20, 24)) * 255).astype(np.uint8), name="small",
                             scale=(2.0, 1.0), translate=(10.0, 3.0))
    viewer.add_image((smooth((40, 48)) * 255).astype(np.uint8), name="big")
    widget = make_widget(viewer, task="sr", factor=2, extra_layers=True)
    widget.image.value = image
    shown = lambda w: not w.native.isHidden()  # noqa: E731 (the dock itself is not on screen)
    fields = widget.task_fields
    assert shown(fields.field("factor")) and not shown(widget.keep_observed) and not shown(fields.layers["psf"])
    widget.reference.value = viewer.layers["small"]  # the wrong size for a 2x answer: flagged
    assert any("(40, 48)" in p for p in widget.check())
    widget.reference.value = viewer.layers["big"]
    assert widget.check() == []
    widget.run()
    assert errors == []
    result = viewer.layers["small DIP"]
    assert result.data.shape == (40, 48) and result.metadata["task_options"] == {"factor": 2}
    assert tuple(result.scale) == (1.0, 0.5)
    # the same extent: first pixel edge and last pixel edge coincide with the input's
    for axis in (0, 1):
        s_in, s_out = image.scale[axis], result.scale[axis]
        assert np.isclose(image.translate[axis] - s_in / 2, result.translate[axis] - s_out / 2)
        assert np.isclose(image.translate[axis] + (image.data.shape[axis] - 0.5) * s_in,
                          result.translate[axis] + (result.data.shape[axis] - 0.5) * s_out)
    assert viewer.layers["small DIP iterations"].data.shape[1:] == (40, 48)
    assert result.metadata["history"]["summary"]["classical_method"] == "bicubic"
    namespace = {"viewer": viewer}  # Copy as Python repeats the 2x run, not the default 4x
    exec(widget.copy_as_python(), namespace)
    assert namespace["result"].image.shape == (40, 48)
    assert namespace["result"].config.to_dict() == result.metadata["config"]


def test_a_bead_stack_deconvolves_a_z_stack_whole_and_one_slice_with_its_in_focus_plane(viewer, errors):
    """A 3D PSF layer: the whole stack for a z-labelled stack run on all slices (3D Richardson-Lucy
    as the partner), its sharpest plane for the current slice; Copy as Python names what ran."""
    stack = np.stack([smooth((32, 32), s) for s in range(4)]).astype(np.float32)
    viewer.add_image(stack, name="zs", scale=(2.0, 1.0, 1.0), axis_labels=("z", "y", "x"))
    bead = np.stack([src_core.gaussian_psf(s, size=7) for s in (2.0, 1.0, 1.5)])  # sharpest: plane 1
    viewer.add_image(bead, name="bead")
    widget = make_widget(viewer, task="deconvolve", iterations=4)
    widget.image.value = viewer.layers["zs"]
    widget.task_fields.layers["psf"].value = viewer.layers["bead"]
    widget.slices.value = "all"
    assert widget.check() == []
    widget.run()
    ran = viewer.layers["zs DIP"].metadata
    assert errors == [] and any("richardson-lucy over the z-stack in 3D with the 3-plane PSF" in n
                                for n in ran["notes"]), ran["notes"]
    code = widget.copy_as_python()
    assert "psf=viewer.layers['bead'].data," in code and "stack='z'" in code
    widget.slices.value = "current"
    viewer.dims.set_point(0, 2 * 2.0)
    widget.run()
    assert errors == []
    code = widget.copy_as_python()
    assert "psf=viewer.layers['bead'].data[1]" in code and "stack=" not in code  # its in-focus plane
    namespace = {"viewer": viewer}
    exec(code, namespace)
    assert namespace["result"].config.to_dict() == viewer.layers["zs DIP"].metadata["config"]


def test_deconvolution_takes_a_psf_layer_and_flags_a_bad_one(viewer, errors):
    image = viewer.add_image(smooth(), name="blurred")
    psf = np.zeros((9, 9))
    psf[3:6, 3:6] = 1.0
    psf_layer = viewer.add_image(psf, name="bead")
    widget = make_widget(viewer, task="deconvolve", iterations=10)
    widget.image.value = image
    shown = lambda w: not w.native.isHidden()  # noqa: E731
    fields = widget.task_fields
    assert shown(fields.layers["psf"]) and shown(fields.field("psf")) and not shown(fields.field("factor"))
    assert widget.task_options() == {"psf": 2.0, "psf_z": 0.0}
    fields.layers["psf"].value = psf_layer
    assert np.array_equal(widget.task_options()["psf"], psf)
    psf_layer.data = -psf
    assert any("negative" in p for p in widget.check())
    psf_layer.data = psf
    assert widget.check() == []
    widget.iterations.value = 40  # far from done: the status says the answer is the classical one
    widget.run()
    result = viewer.layers["blurred DIP"]
    assert errors == [] and result.data.shape == (40, 48)
    assert tuple(result.scale) == tuple(image.scale)
    summary = result.metadata["history"]["summary"]
    assert summary["blend_alpha"] < 0.05 and summary["verdict"].startswith("the answer is the richardson-lucy one")
    assert "The answer is the richardson-lucy one (DIP's weight" in widget.status.text()
    assert "DIP alone reached" in widget.status.text()


def test_a_large_image_in_tiles_runs_only_the_damaged_tiles(viewer, errors, monkeypatch):
    image = viewer.add_image((smooth((96, 96)) * 255).astype(np.uint8), name="big")
    labels = np.zeros((96, 96), np.uint8)
    labels[70:80, 70:80] = 1                   # damage in one corner tile only
    viewer.add_labels(labels, name="hole")
    widget = make_widget(viewer, iterations=10)
    widget.mask.value = viewer.layers["hole"]
    # whole, the run is refused before Run when the device is too small, and tiles are offered
    monkeypatch.setattr("src_core.speed.available_memory", lambda device: 2**20)
    widget.check()
    assert not widget.run_button.enabled and "tiles" in widget.check_label.text()
    monkeypatch.undo()
    widget.region.value = "tiles"
    widget.tile.value = 64
    assert "Estimate for 1 of 4 tiles" in widget.check_label.text()
    widget.run()
    result = viewer.layers["big DIP"]
    assert errors == [] and result.data.shape == (96, 96) and result.data.dtype == np.uint8
    assert len(result.metadata["histories"]) == 1
    assert any("4 tile(s) of 64 px" in n and "1 ran ([3])" in n for n in result.metadata["notes"])
    painted = labels.astype(bool)
    np.testing.assert_array_equal(result.data[~painted], image.data[~painted])  # observed kept
    assert not np.array_equal(result.data[painted], image.data[painted])


def test_a_stacks_slices_run_in_tiles_each_on_its_own_only_where_damaged(viewer, errors):
    stack = np.stack([(smooth((96, 96), s) * 255).astype(np.uint8) for s in range(3)])
    viewer.add_image(stack, name="zs", axis_labels=("t", "y", "x"))
    labels = np.zeros(stack.shape, np.uint8)
    labels[1, 70:80, 70:80] = 1   # slice 1, its last tile
    labels[2, 5:12, 5:12] = 1     # slice 2, its first tile; slice 0 is whole
    viewer.add_labels(labels, name="holes")
    widget = make_widget(viewer, iterations=10)
    widget.mask.value = viewer.layers["holes"]
    widget.slices.value, widget.region.value, widget.tile.value = "all", "tiles", 64
    assert "Estimate for 2 of 12 tiles" in widget.check_label.text(), widget.check_label.text()
    widget.run()
    result = viewer.layers["zs DIP"]
    assert errors == [] and result.data.shape == stack.shape and result.data.dtype == np.uint8
    assert len(result.metadata["histories"]) == 2
    assert any("4 tile(s) per slice of 64 px" in n and "(slice 0: []; slice 1: [3]; slice 2: [0])" in n
               for n in result.metadata["notes"]), result.metadata["notes"]
    painted = labels.astype(bool)
    np.testing.assert_array_equal(result.data[~painted], stack[~painted])  # observed kept, slice 0 whole
    assert not np.array_equal(result.data[painted], stack[painted])


def test_a_stack_on_a_dask_cluster_equals_the_run_here(viewer, qtbot, errors):
    distributed = pytest.importorskip("distributed")
    stack = np.stack([smooth((32, 32), s) for s in range(3)]).astype(np.float32)
    viewer.add_image(stack, name="zs")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    settings = dict(preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2,
                    iterations=8, report_every=4, device="cpu", threads=1)
    # a cluster's slices start from random weights: the run here without warm starts
    here = np.array(napari_dip.restore_layer(viewer, "zs", "hole", warm_start=0, **settings).data)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as client:
        there = napari_dip.restore_layer(viewer, "zs", "hole", client=client, **settings)
        np.testing.assert_array_equal(there.data, here)
        assert len(there.metadata["histories"]) == 3 and errors == []
        # the panel, threaded, with the scheduler's address: the same answers, as they arrive
        widget = make_widget(viewer, threaded=True, iterations=8, report_every=4, channels=8)
        widget.image.value, widget.mask.value = viewer.layers["zs"], viewer.layers["hole"]
        widget.slices.value, widget.scheduler.value = "all", cluster.scheduler_address
        shown = []
        widget.status.setText = lambda text, real=widget.status.setText: (shown.append(text), real(text))
        with qtbot.waitSignal(widget.run_finished, timeout=120_000) as finished:
            widget.run()
        np.testing.assert_array_equal(finished.args[0].data, here)
    cluster.close()
    assert errors == [] and widget.progress.format() == "done"
    news = [t for t in shown if "connecting" in t or "sent to the cluster" in t]
    assert "connecting" in news[0] and "3 slice(s) sent to the cluster" in news[-1]  # in order
    assert "Done in" in shown[-1]
    with pytest.raises(DIPError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        napari_dip.restore_layer(viewer, "zs", "hole", scheduler="tcp://127.0.0.1:1", **settings)


def test_a_dask_backed_stack_is_read_one_slice_at_a_time(viewer, errors, monkeypatch):
    da = pytest.importorskip("dask.array")
    stack = (np.stack([smooth((32, 32), s) for s in range(3)]) * 4000).astype(np.uint16)

    class Source:  # an array on disk, as far as dask can tell; it refuses any read of two slices
        shape, dtype, ndim = stack.shape, stack.dtype, stack.ndim

        def __getitem__(self, key):
            assert np.arange(3)[key[0]].size <= 1, f"read {key}: more than one slice"
            return stack[key]

        def __array__(self, *args, **kwargs):
            raise AssertionError("the whole stack was read at once")

    lazy = viewer.add_image(da.from_array(Source(), chunks=(1, 32, 32)), name="lazy")
    viewer.add_image(stack, name="eager")
    viewer.add_labels(square_labels((32, 32)), name="hole")
    widget = make_widget(viewer, iterations=6)
    widget.mask.value = viewer.layers["hole"]
    read = []
    real = src_core.imaging.LazySlices._read
    monkeypatch.setattr(src_core.imaging.LazySlices, "_read", lambda self, i: read.append(i) or real(self, i))
    results = {}
    for name in ("eager", "lazy"):
        widget.image.value = viewer.layers[name]
        widget.slices.value = "all"
        widget.run()
        results[name] = viewer.layers[f"{name} DIP"].data
    assert errors == []
    assert widget.current.captured.image is lazy.data     # not copied
    assert sorted(set(read)) == [0, 1, 2]                  # the engine read it slice by slice
    np.testing.assert_array_equal(results["lazy"], results["eager"])
    assert results["lazy"].dtype == np.uint16


def test_restarts_add_a_hidden_spread_layer_zero_where_kept_and_copy_repeats_them(viewer, errors):
    widget, img = hole_widget(viewer)
    widget.run()
    assert not [layer for layer in viewer.layers if layer.metadata.get("napari_dip") == "spread"]  # K=1
    widget.restarts.value = 2
    widget.region.value = "damage"
    widget.run()
    assert errors == []
    spread = [layer for layer in viewer.layers if layer.metadata.get("napari_dip") == "spread"]
    assert len(spread) == 1 and not spread[0].visible and spread[0].name == "img DIP spread (2 restarts)"
    data = spread[0].data
    hole = square_labels((32, 32)) == 1
    assert data.shape == img.shape and data.dtype == np.float32
    assert np.all(data[~hole] == 0)               # kept pixels and outside the box: 0
    assert data[hole].mean() > 1.0                # 8-bit units: a spread of [0, 1] values stays below 1
    result = widget.result_layer
    assert result.metadata["config"]["restarts"] == 2 and result.metadata["history"]["summary"]["restarts"] == 2
    assert "restarts=2" in widget.copy_as_python()
    assert spread[0] not in widget.image.choices and spread[0].metadata["source"] == "img"
    widget.run()  # a rerun of the same kind replaces the spread with the result
    assert len([layer for layer in viewer.layers if layer.metadata.get("napari_dip") == "spread"]) == 1


def _live_widget(viewer, iterations=300):
    """A 64x64 image with two 9x9 black scratches (at 8 and 48) and an empty mask to paint them on."""
    clean = (smooth((64, 64)) * 255).astype(np.uint8)
    damaged = clean.copy()
    damaged[8:17, 8:17] = damaged[48:57, 48:57] = 0
    viewer.add_image(damaged, name="img")
    labels = viewer.add_labels(np.zeros((64, 64), np.uint8), name="scratch")
    labels.brush_size = 16  # a disk that covers a scratch
    widget = make_widget(viewer, threaded=True, iterations=iterations, fit_budget=False)
    widget.mask.value = labels
    return widget, clean, damaged, labels


def test_live_heals_each_stroke_a_new_stroke_restarts_it_and_off_stops_everything(viewer, qtbot, errors):
    widget, clean, damaged, labels = _live_widget(viewer)
    widget.live.value = True
    live = widget.live_healing
    assert live is not None and errors == [] and not widget.run_button.enabled   # Run waits while live
    live.timer.setInterval(50)
    layer = viewer.layers["img DIP live"]
    assert viewer.layers.index(layer) == viewer.layers.index(viewer.layers["img"]) + 1  # under the mask
    assert viewer.layers.selection.active is labels and np.array_equal(layer.data, damaged)
    assert layer not in widget.image.choices and labels.contour >= 2  # outlines: the heal shows under them
    assert "Live healing" in widget.check_label.text()
    labels.paint((12, 12), 1)                       # a stroke starts a run after the pause
    qtbot.waitUntil(lambda: live.running, timeout=10_000)
    labels.paint((52, 52), 1)                       # a second, far away, stops it and heals both
    qtbot.waitUntil(lambda: len(live.timings) >= 1 and not live.running, timeout=60_000)
    assert len(live.timings) == 1                   # the first run was stopped, its box healed with the second
    (r0, r1), (c0, c1) = live.timings[0]["region"]
    assert r0 <= 8 and r1 >= 57 and c0 <= 8 and c1 >= 57
    healed = layer.data
    for rows, cols in ((slice(8, 17), slice(8, 17)), (slice(48, 57), slice(48, 57))):
        error = np.abs(healed[rows, cols].astype(int) - clean[rows, cols]).mean()
        assert error < np.abs(damaged[rows, cols].astype(int) - clean[rows, cols]).mean() / 3, error
    observed = np.asarray(labels.data) == 0
    assert np.array_equal(healed[observed], damaged[observed]) and errors == []  # kept where not painted
    labels.paint((14, 14), 0)                       # an erase near the first: off while it runs stops it
    qtbot.waitUntil(lambda: live.running, timeout=10_000)
    widget.live.value = False
    qtbot.waitUntil(lambda: not live.running, timeout=20_000)
    assert widget.live_healing is None and widget.run_button.enabled and len(live.timings) == 1
    assert labels.contour == 0
    labels.paint((30, 30), 1)                       # no longer listened to
    qtbot.wait(300)
    assert not live.running and len(live.timings) == 1


def test_live_stops_when_its_mask_goes_refuses_a_stack_and_the_console_call_heals(viewer, qtbot, errors):
    widget, _, _, labels = _live_widget(viewer, iterations=20)
    widget.live.value = True
    assert widget.live_healing is not None
    viewer.layers.remove(labels)
    assert widget.live_healing is None and not widget.live.value
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")
    with pytest.raises(DIPError, match="2D image"):
        napari_dip.restore_layer(viewer, "stack", viewer.add_labels(np.zeros((3, 32, 32), np.uint8)), live=True)
    scratch = viewer.add_labels(np.zeros((64, 64), np.uint8), name="scratch 2")
    live = napari_dip.restore_layer(viewer, "img", scratch, live=True, preset="cpu", scales=2, down_channels=8,
                                    up_channels=8, skip_channels=2, iterations=15, device="cpu", threads=1)
    live.timer.setInterval(50)
    scratch.paint((30, 30), 1)
    qtbot.waitUntil(lambda: len(live.timings) == 1, timeout=60_000)
    t = live.timings[0]
    assert t["read_at"] < t["first_at"] <= t["final_at"] and t["iterations"] == 15
    assert live.histories[0].config["iterations"] == 15
    live.stop()
    assert not live.active
