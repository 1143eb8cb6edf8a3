"""The plugin's screenshots for docs/plugin.md, taken as a user sees it on a 1366x768 laptop screen.

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/screenshots.py

Opens a real napari window of 1366x768, loads the Kate sample (File > Open Sample > Deep Image
Prior > Kate ...), docks the panel as the Plugins menu does, and runs it in its thread
worker with the panel's defaults (the time budget on, one thread left to napari): one
picture mid-run (``docs/images/napari_widget.png``) and one after it ended
(``docs/images/napari_widget_done.png``; the run is stopped after ``--stop-after`` seconds
so that the picture comes in under a minute); then a photo with two scratches restored around
the mask with 3 restarts, its answer beside the spread layer (``docs/images/napari_spread.png``);
then a z-stack restored in tiles, every slice (``docs/images/napari_tiled_stack.png``, mid-run).
It checks what the issue asked of the screen
and exits 1 if any of it fails: the live plot, Run/Stop, the progress, Save run and Copy as
Python are inside the window during the run and after it, and a run adds one result layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def in_view(widget, window) -> bool:
    """``widget`` is shown and lies wholly inside the window (not scrolled away, not cut off)."""
    if not widget.isVisible():
        return False
    top_left = widget.mapTo(window, widget.rect().topLeft())
    bottom_right = widget.mapTo(window, widget.rect().bottomRight())
    return window.rect().contains(top_left) and window.rect().contains(bottom_right)


def wait(app, seconds: float, until=lambda: False) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        app.processEvents()
        time.sleep(0.02)


def spread_picture(viewer, widget, app, path: Path) -> dict:
    """The camera photo with two scratches painted, restored around the mask with 3 restarts:
    the answer beside its spread layer (napari's grid view), as ``path``."""
    import numpy as np
    from skimage import data

    image = data.camera()[::2, ::2].copy()
    labels = np.zeros(image.shape, np.uint8)
    labels[40:70, 30:80] = 1          # a 30x50 scratch
    labels[150:160, 90:190] = 1       # a thin one
    image[labels == 1] = 255
    viewer.layers.clear()  # the Kate run's layers: the grid below shows this run's two
    viewer.add_image(image, name="camera")
    viewer.add_labels(labels, name="scratches")
    widget.image.value = viewer.layers["camera"]
    widget.mask.value = viewer.layers["scratches"]
    widget.task.value = "inpaint"
    widget.region.value = "damage"
    widget.restarts.value = 3
    widget.fit_budget.value = False
    widget.iterations.value = 300
    widget.run()
    wait(app, 300.0, until=lambda: not widget.is_running)
    spread = [layer for layer in viewer.layers if layer.metadata.get("napari_dip") == "spread"]
    hidden = bool(spread) and not spread[0].visible
    for layer in viewer.layers:
        layer.visible = layer.name in ("camera DIP",) or layer in spread
    viewer.grid.enabled = True
    viewer.reset_view()
    wait(app, 1.0)
    viewer.window.screenshot(str(path), canvas_only=False)
    viewer.grid.enabled = False
    print(f"spread run: {widget.status.text()}")
    return {"a spread layer, hidden at first, after a run of 3 restarts": hidden}


def tiled_stack_picture(viewer, widget, app, path: Path, after: float) -> dict:
    """A 4-plane z-stack (the phantom of benchmarks/volume.py, 256x256) with scratches painted
    on two planes, every slice restored in tiles of 128 px (only the damaged ones run): a
    picture ``after`` seconds into the run, as ``path``; then the run to its end."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from volume import synthetic_volume

    stack = (synthetic_volume(4, 256, 3) * 255).astype(np.uint8)
    labels = np.zeros(stack.shape, np.uint8)
    labels[1, 20:30, 10:50] = 1      # in plane 1's first tile (tiles start at 0, 64 and 128)
    labels[3, 200:240, 150:160] = 1  # across two tiles of plane 3
    stack[labels == 1] = 255
    viewer.layers.clear()
    viewer.add_image(stack, name="zstack", axis_labels=("z", "y", "x"), scale=(3.0, 1.0, 1.0))
    viewer.add_labels(labels, name="scratches", scale=(3.0, 1.0, 1.0))
    widget.image.value = viewer.layers["zstack"]
    widget.mask.value = viewer.layers["scratches"]
    widget.task.value = "inpaint"
    widget.restarts.value = 1
    widget.slices.value, widget.region.value, widget.tile.value = "all", "tiles", 128
    widget.fit_budget.value = False
    widget.iterations.value = 200
    estimate = widget.check_label.text()
    viewer.dims.set_point(0, 3.0)  # plane 1 in view
    widget.run()
    wait(app, after)
    viewer.window.screenshot(str(path), canvas_only=False)
    wait(app, 600.0, until=lambda: not widget.is_running)
    result = viewer.layers["zstack DIP"] if "zstack DIP" in viewer.layers else None
    notes = [] if result is None else result.metadata["notes"]
    print(f"tiled stack: {estimate.splitlines()[0]}; {widget.status.text()}")
    return {"the estimate counts the damaged tiles of every slice": "for 3 of 36 tiles" in estimate,
            "a tiled stack's answer is the whole stack": result is not None and result.data.shape == stack.shape,
            "the notes say which tiles of which slice ran": any("slice 1: [0]" in n and "slice 3: [7, 8]" in n
                                                                for n in notes)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mid-run-after", type=float, default=20.0, help="seconds into the run")
    parser.add_argument("--stop-after", type=float, default=35.0, help="seconds into the run")
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--no-spread", dest="spread", action="store_false",
                        help="skip the third picture (restarts and their spread layer)")
    parser.add_argument("--spread-only", action="store_true", help="only the third picture")
    parser.add_argument("--tiled-stack-only", action="store_true", help="only the fourth picture")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    window.move(0, 0)
    app = QApplication.instance()
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Restore image")
    if args.spread_only or args.tiled_stack_only:
        checks = (spread_picture(viewer, widget, app, args.output_dir / "napari_spread.png") if args.spread_only
                  else tiled_stack_picture(viewer, widget, app, args.output_dir / "napari_tiled_stack.png",
                                           args.mid_run_after))
        for name, ok in checks.items():
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
        viewer.close()
        return 0 if all(checks.values()) else 1
    viewer.open_sample("napari-dip", "kate")
    wait(app, 2.0)
    before = len(viewer.layers)
    checks = {}
    parts = {"plot": widget.canvas, "Run": widget.run_button.native, "Stop": widget.stop_button.native,
             "progress": widget.progress, "Save run": widget.save_button.native,
             "Copy as Python": widget.copy_button.native, "task": widget.task.native}
    widget.run()
    wait(app, args.mid_run_after)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    viewer.window.screenshot(str(args.output_dir / "napari_widget.png"), canvas_only=False)
    checks.update({f"{name} in view during the run": in_view(w, window) for name, w in parts.items()})
    wait(app, max(0.0, args.stop_after - args.mid_run_after))
    widget.stop()
    wait(app, 60.0, until=lambda: not widget.is_running)
    wait(app, 1.0)
    viewer.window.screenshot(str(args.output_dir / "napari_widget_done.png"), canvas_only=False)
    checks.update({f"{name} in view after the run": in_view(w, window) for name, w in parts.items()})
    checks["one result layer added"] = len(viewer.layers) == before + 1
    task_text = widget.task.native.currentText()
    checks["the task's name is read whole"] = (widget.task.native.fontMetrics().horizontalAdvance(task_text)
                                               < widget.task.native.width() - 20)
    print(f"status: {widget.status.text()}")
    print(f"layers: {[layer.name for layer in viewer.layers]}")
    if args.spread:
        checks.update(spread_picture(viewer, widget, app, args.output_dir / "napari_spread.png"))
        checks.update(tiled_stack_picture(viewer, widget, app, args.output_dir / "napari_tiled_stack.png",
                                          args.mid_run_after))
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    viewer.close()
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
