"""Render docs/images/napari_widget.png: napari with the Deep Image Prior widget docked,
restoring the Kate sample, captured mid-run after a few previews.

Needs a display; on a headless machine run it under Xvfb:

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshot.py

The run is deliberately small (CPU, a narrow network) so the picture comes in a minute or
two; the widget, the live preview, the iteration stack and the PSNR curve are real.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "napari_widget.png"))
    parser.add_argument("--previews", type=int, default=4,
                        help="take the picture after this many previews")
    parser.add_argument("--preview-every", type=int, default=40)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--size", default="1366x768", help="window size, a laptop screen by default")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-dip: Deep Image Prior")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window.resize(width, height)
    viewer.open_sample("napari-dip", "kate")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    widget.threaded = True
    widget.preset.value = "cpu"
    widget.channels.value = args.channels
    widget.iterations.value = 800
    widget.preview_every.value = args.preview_every
    widget.report_every.value = 2
    widget.device.value = args.device
    viewer.layers["kate mask"].visible = False  # show the damaged photo itself
    widget.run()
    if widget.last_error:
        raise SystemExit(f"run did not start: {widget.last_error}")

    app = QApplication.instance()
    deadline = time.monotonic() + args.timeout
    outputs = widget.current.outputs
    while len(outputs.frames) < args.previews:
        if time.monotonic() > deadline or not widget.is_running:
            raise SystemExit("no previews in time (or the run ended); see the widget status")
        app.processEvents()
        time.sleep(0.02)
    outputs.update_curve_layer()        # the curve layer as it stands now
    viewer.reset_view()                 # image and curve side by side
    for _ in range(30):                 # let the canvas and the plot catch up
        app.processEvents()
        time.sleep(0.03)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"saved {out} after {len(outputs.frames)} previews "
          f"(iteration {outputs.frames[-1][1]})")

    widget.stop()
    while widget.is_running and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    viewer.close()


if __name__ == "__main__":
    main()
