"""The time estimate shown before a run against the time the run then takes, on this machine.

    python benchmarks/time_model.py                   # both thread counts, both CPU kinds' precision
    python benchmarks/time_model.py --threads 1 --precision auto -o docs/results/time_model

For each case the estimate is what ``src_core.prepare(...).estimate()`` (the API, and what the
CLI prints) says before any work, calibration included; then the same problem runs with
``src_core.restore_problem`` and its wall time is measured.  Precision ``float32`` and
``bfloat16`` are forced in turn (``auto`` picks one of them by the CPU, so both kinds of CPU
are covered on either machine; bf16 without native units is emulated and slow, but measured
all the same).  Every case starts with an empty calibration cache, so the estimate includes no
knowledge from an earlier run.  A case with early stopping has an estimate that is an upper
bound: its row says so, and its ratio is judged against the run's own iteration count too.

Cases (one thread or two, 2D unless said): inpainting a block-hole mask 128, 50% random pixels
128, denoising 128 (early stopping), x4 super-resolution of 48x48, deconvolution 128 (PSF sigma
2), an RGB 256 text-mask inpainting, a stack of 4 slices 64x64, and 2 of 4 tiles of 192x192.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src_core  # noqa: E402
from src_core import speed  # noqa: E402
from _report import command_line, write_report  # noqa: E402


def _photo(size, channels=1):
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    base = 0.5 + 0.25 * np.sin(9 * x) * np.cos(7 * y) + 0.15 * np.sin(23 * x * y)
    rng = np.random.default_rng(0)
    img = np.clip(base + 0.05 * rng.standard_normal((size, size)), 0, 1)
    if channels == 3:
        img = np.stack([img, img[::-1], img[:, ::-1]], axis=-1)
    return (img * 255).astype(np.uint8)


def _blocks(size, block=8, every=24):
    mask = np.ones((size, size), bool)
    for r in range(4, size - block, every):
        for c in range(4 + (r // every % 2) * 12, size - block, every):
            mask[r:r + block, c:c + block] = False
    return mask


def _text(size):
    return src_core.text_mask((size, size), [("napari dip", (size // 5, size // 2), size // 6),
                                             ("restore", (size // 8, size - size // 6), size // 7)])


def cases():
    """name -> (function making (image, mask, kwargs), iterations)."""
    noisy = np.clip(_photo(128) / 255 + np.random.default_rng(1).normal(0, 25 / 255, (128, 128)), 0, 1)
    stack = np.stack([_photo(64)] * 4)
    wide = _photo(192)
    wide_mask = np.ones((192, 192), bool)
    wide_mask[20:40, 20:50] = False       # in the first tile
    wide_mask[150:170, 150:180] = False   # in the last
    return {
        "inpaint blocks 128": (lambda: (_photo(128), _blocks(128), dict(task="inpaint")), 300),
        "random 50% 128": (lambda: (_photo(128), None, dict(task="random")), 300),
        "denoise 128 (early stop)": (lambda: (noisy.astype(np.float32), None, dict(task="denoise")), 600),
        "sr x4 48->192": (lambda: (_photo(48), None, dict(task="sr", factor=4)), 200),
        "deconvolve 128": (lambda: (_photo(128), None, dict(task="deconvolve", psf=2.0)), 300),
        "inpaint text RGB 256": (lambda: (_photo(256, 3), _text(256), dict(task="inpaint")), 100),
        "stack 4x64 random": (lambda: (stack, None, dict(task="random", channel_axis=None)), 150),
        "tiles 2 of 4, 192": (lambda: (wide, wide_mask, dict(task="inpaint", tile=128)), 150),
    }


def measure(name, make, iterations, threads, precision):
    image, mask, kwargs = make()
    kwargs = dict(kwargs, preset="cpu", device="cpu", iterations=iterations, threads=threads,
                  precision=precision)
    tile = kwargs.pop("tile", None)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DIP_CACHE_DIR"] = cache  # no calibration from an earlier case
        t0 = time.perf_counter()
        if tile is not None:
            work = src_core.TiledProblem.prepare(image, mask, tile=tile, **kwargs)
        else:
            work = src_core.prepare(image, mask, **kwargs)
        estimate = work.estimate()
        estimating = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = work.restore() if tile is not None else src_core.restore_problem(work, image)
        wall = time.perf_counter() - t0
    ran = sum(h.timings.get("iterations", 0) for h in result.histories)
    row = {"case": name, "threads": threads, "precision": precision, "estimate_s": estimate.total_s,
           "measured_s": wall, "ratio": estimate.total_s / wall, "upper_bound": estimate.upper_bound,
           "estimated_iterations": estimate.iterations, "ran_iterations": ran,
           "estimate_per_iteration_s": estimate.s_per_iteration,
           "measured_per_iteration_s": float(np.mean([h.timings["s_per_iteration"] for h in result.histories])),
           "setup_s": estimate.setup_s, "classical_s": estimate.classical_s, "estimating_s": estimating}
    if estimate.upper_bound and ran < estimate.iterations:
        # the bound is judged by its rate: what the iterations that ran were estimated to take
        row["ratio_at_ran_iterations"] = (estimate.total_s - estimate.s_per_iteration
                                          * (estimate.iterations - ran)) / wall
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"],
                        choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--cases", nargs="+", default=None, help="a subset of the case names")
    parser.add_argument("-o", "--out", type=Path, default=None, help="write time_model.md/.json here")
    args = parser.parse_args(argv)
    chosen = {k: v for k, v in cases().items() if args.cases is None or k in args.cases}
    rows = []
    lines = [f"`{command_line(__file__, argv)}` on {speed.cpu_name()} ({speed.usable_cores()} usable cores, "
             f"native bf16: {'yes' if speed.cpu_has_native_bf16() else 'no'}), {time.strftime('%Y-%m-%d')}", "",
             "| case | threads | precision | estimate s | measured s | estimate / measured | s/it est. / meas. |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for precision in args.precision:
        for threads in args.threads:
            for name, (make, iterations) in chosen.items():
                row = measure(name, make, iterations, threads, precision)
                rows.append(row)
                ratio = f"{row['ratio']:.2f}"
                if "ratio_at_ran_iterations" in row:
                    ratio = (f"{ratio} (upper bound; stopped at {row['ran_iterations']} of "
                             f"{row['estimated_iterations']} it: {row['ratio_at_ran_iterations']:.2f})")
                line = (f"| {name} | {threads} | {precision} | {row['estimate_s']:.1f} | {row['measured_s']:.1f} | "
                        f"{ratio} | {row['estimate_per_iteration_s']:.4f} / {row['measured_per_iteration_s']:.4f} |")
                lines.append(line)
                print(line, flush=True)
    judged = [r.get("ratio_at_ran_iterations", r["ratio"]) for r in rows]
    summary = (f"\nestimate / measured from {min(judged):.2f} to {max(judged):.2f} over {len(rows)} cases "
               f"({sum(0.7 <= j <= 1.3 for j in judged)} within ±30%)")
    lines.append(summary)
    print(summary)
    if args.out is not None:
        write_report(args.out, "time_model", lines, {"command": command_line(__file__, argv), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
