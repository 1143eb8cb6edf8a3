"""The widget's estimate against the time from pressing Run to the result, in a real napari.

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/time_model_widget.py -o docs/results/time_model

The panel's estimate (this machine's calibration, made in the background before Run, and the
classical method timed on random data of the run's size) is read once it says "measured
here"; then Run is pressed and the time to the run's end (its result layers added) measured.
The run's threads are the widget's default (the free cores less one for napari: one here).
Cases as in ``time_model.py``: inpainting 128 (painted blocks), random 50% 128, denoising 128
(early stop: an upper bound), x4 super-resolution of 48x48, deconvolution 128, all 4 slices
of a 4x64x64 stack (random), 2 of 4 tiles of 192x192.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from time_model import _blocks, _photo  # noqa: E402
from _report import command_line, write_report  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="auto: as the widget runs (DIP_CPU_BF16=0 makes it float32 on a bf16 CPU)")
    parser.add_argument("--cases", nargs="+", default=None, help="a subset of the case names")
    parser.add_argument("-o", "--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.precision != "auto":
        os.environ["DIP_CPU_BF16"] = "1" if args.precision == "bfloat16" else "0"
    os.environ["DIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="dip-timing-")  # nothing measured before

    import napari
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    import src_core
    from napari_dip._widget import DIPWidget

    viewer = napari.Viewer(show=True)
    widget = DIPWidget(viewer, threaded=True)
    viewer.window.add_dock_widget(widget, name="Deep Image Prior")
    noisy = np.clip(_photo(128) / 255 + np.random.default_rng(1).normal(0, 25 / 255, (128, 128)), 0, 1)
    wide_hole = np.zeros((192, 192), np.uint8)
    wide_hole[20:40, 20:50] = wide_hole[150:170, 150:180] = 1
    cases = [  # name, image, labels or None, task, settings, iterations
        ("inpaint blocks 128", _photo(128), (~_blocks(128)).astype(np.uint8), "inpaint", {}, 300),
        ("random 50% 128", _photo(128), None, "random", {}, 300),
        ("denoise 128 (early stop)", noisy.astype(np.float32), None, "denoise", {}, 600),
        ("sr x4 48->192", _photo(48), None, "sr", {"factor": 4}, 200),
        ("deconvolve 128", _photo(128), None, "deconvolve", {"psf_sigma": 2.0}, 300),
        ("stack 4x64 random, all slices", np.stack([_photo(64)] * 4), None, "random", {"slices": "all"}, 150),
        ("tiles 2 of 4, 192", _photo(192), wide_hole, "inpaint", {"region": "tiles", "tile": 128}, 150),
    ]
    lines = [f"`{command_line(__file__, argv)}` on {src_core.speed.cpu_name()} "
             f"({src_core.speed.usable_cores()} usable cores, precision auto resolving to "
             f"{'bfloat16' if src_core.speed.cpu_has_native_bf16() else 'float32'}), {time.strftime('%Y-%m-%d')}", "",
             "| case (widget) | estimate before Run | Run to result s | estimate / measured |", "|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    rows = []
    for name, image, labels, task, settings, iterations in cases:
        if args.cases is not None and name not in args.cases:
            continue
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        viewer.add_image(image, name=name)
        widget.image.value = viewer.layers[name]
        widget.preset.value = "cpu"
        widget.task.value = task
        if labels is not None:
            viewer.add_labels(labels, name=f"{name} mask")
            widget.mask.value = viewer.layers[f"{name} mask"]
        for key, value in settings.items():
            getattr(widget, key).value = value
        widget.iterations.value = iterations
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (widget.shown_estimate is not None
                                                   and widget.shown_estimate.measured):
            QApplication.processEvents()
            time.sleep(0.02)
        estimate = widget.shown_estimate
        loop = QEventLoop()
        widget.run_finished.connect(lambda result: loop.quit())
        t0, cpu0 = time.perf_counter(), time.thread_time()
        widget.run()
        if widget.is_running:
            loop.exec()
        wall = time.perf_counter() - t0
        main_cpu = time.thread_time() - cpu0
        widget.run_finished.disconnect()
        timings = [h["timings"] for h in widget.result_layer.metadata["histories"]]
        row = {"case": name, "estimate_s": estimate.total_s, "measured_s": wall, "ratio": estimate.total_s / wall,
               "upper_bound": estimate.upper_bound, "described": estimate.describe(), "status": widget.status.text(),
               "main_thread_cpu_s": main_cpu, "napari_factor": src_core.timing.context_factor("napari"),
               "measured_per_iteration_s": float(np.mean([t["s_per_iteration"] for t in timings])),
               "estimated_iterations": estimate.iterations, "ran_iterations": sum(t["iterations"] for t in timings)}
        if estimate.upper_bound and row["ran_iterations"] < estimate.iterations:
            row["ratio_at_ran_iterations"] = (estimate.total_s - estimate.s_per_iteration
                                              * (estimate.iterations - row["ran_iterations"])) / wall
        rows.append(row)
        ratio = f"{row['ratio']:.2f}"
        if "ratio_at_ran_iterations" in row:
            ratio += (f" (upper bound; stopped at {row['ran_iterations']} of {estimate.iterations} it: "
                      f"{row['ratio_at_ran_iterations']:.2f})")
        first = " (the first run in napari here: nothing learned yet)" if len(rows) == 1 else ""
        line = f"| {name}{first} | {estimate.describe()} | {wall:.1f} | {ratio} |"
        lines.append(line)
        print(line, flush=True)
    judged = [r.get("ratio_at_ran_iterations", r["ratio"]) for r in rows]
    lines.append(f"\nestimate / measured from {min(judged):.2f} to {max(judged):.2f} over {len(rows)} cases "
                 f"({sum(0.7 <= j <= 1.3 for j in judged)} within ±30%)")
    print(lines[-1])
    if args.out is not None:
        stem = "time_model_widget" + ("" if args.precision == "auto" else f"_{args.precision}")
        write_report(args.out, stem, lines, {"command": command_line(__file__, argv), "rows": rows})
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
