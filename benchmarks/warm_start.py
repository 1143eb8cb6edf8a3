"""Warm starts across a stack: does slice k+1 starting from slice k's weights get there sooner?

    python benchmarks/warm_start.py --stack timelapse -o docs/results/warm_start
    python benchmarks/warm_start.py --stack focus -o docs/results/warm_start
    python benchmarks/warm_start.py --report -o docs/results/warm_start

Two 8-slice stacks the project never tuned on, 96x96, 50% of each slice's pixels missing
(its own random mask): ``timelapse``, scikit-image's ``cell`` drifting 2 px a frame, and
``focus``, ``coffee`` (grey) through a focus series (Gaussian blur sigma 0 to 1.4).  Each
runs three ways with the default CPU setting (no preset, one thread): cold (every slice from
random weights), warm with ``warm_start=1`` (the whole curve, to see when it gets there) and
warm with ``warm_start=1/3``.  A slice's *time to the first slice's PSNR* is its iterations
to reach the PSNR slice 0 ends at, times its seconds an iteration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src_core  # noqa: E402
from src_core.reports import md_table, write_json, write_text_atomic  # noqa: E402

SIZE, SLICES = 96, 8
THIRD = round(1 / 3, 3)  # the warm_start the runs are keyed by (results are saved to 7 digits)


def stack(name: str) -> np.ndarray:
    """(8, 96, 96) float32 in [0, 1]."""
    from scipy.ndimage import gaussian_filter
    from skimage import data
    from skimage.color import rgb2gray

    if name == "timelapse":
        image = data.cell() / 255.0
        top, left = 200, 200
        return np.stack([image[top:top + SIZE, left + 2 * k:left + 2 * k + SIZE] for k in range(SLICES)]
                        ).astype(np.float32)
    image = rgb2gray(data.coffee())
    image = image[:, :398].reshape(200, 2, 199, 2).mean(axis=(1, 3))[52:52 + SIZE, 50:50 + SIZE]
    return np.stack([gaussian_filter(image, 0.2 * k) for k in range(SLICES)]).astype(np.float32)


def run(name: str, warm_start: float) -> dict:
    frames = stack(name)
    result = src_core.restore(frames, task="random", device="cpu", threads=1, classical=None,
                              report_every=25, warm_start=warm_start)
    slices = []
    for h in result.histories:
        slices.append({"iterations": h.iterations, "psnr": h.psnr, "s_per_iteration": h.timings["s_per_iteration"],
                       "setup_s": h.timings.get("setup_s", 0.0), "psnr_answer": h.summary.get("psnr_answer"),
                       "config_iterations": h.config["iterations"]})
    return {"stack": name, "warm_start": warm_start, "slices": slices,
            "total_s": sum(s["setup_s"] + s["s_per_iteration"] * s["config_iterations"] for s in slices)}


def time_to(slice_record: dict, level: float) -> float | None:
    for it, value in zip(slice_record["iterations"], slice_record["psnr"]):
        if value is not None and value >= level:
            return it * slice_record["s_per_iteration"]
    return None


def report(out: Path) -> None:
    rows, lines = [], []
    for name in ("timelapse", "focus"):
        runs = {round(r["warm_start"], 3): r for r in (json.loads(p.read_text()) for p in out.glob(f"{name}-*.json"))}
        if not {0.0, 1.0} <= set(runs):
            continue
        cold, warm = runs[0.0]["slices"], runs[1.0]["slices"]
        level = cold[0]["psnr"][-1]
        first = time_to(cold[0], level)
        ratios = []
        for k in range(1, len(cold)):
            t_warm, t_cold = time_to(warm[k], level), time_to(cold[k], level)
            ratios.append(None if t_warm is None else t_warm / first)
            rows.append([name, k, "never" if t_cold is None else f"{t_cold:.1f}",
                         "never" if t_warm is None else f"{t_warm:.1f}",
                         "-" if ratios[-1] is None else f"{ratios[-1]:.2f}",
                         f"{cold[k]['psnr_answer']:.2f}", f"{runs[THIRD]['slices'][k]['psnr_answer']:.2f}"
                         if THIRD in runs else "-"])
        done = [r for r in ratios if r is not None]
        third = runs.get(THIRD)
        lines.append(f"- **{name}**: slice 0 ends at {level:.2f} dB after {first:.1f} s; every later slice "
                     f"warm gets there in {min(done):.2f}-{max(done):.2f} of that time "
                     f"({sum(r <= 1 / 3 for r in done)} of {len(ratios)} within a third)" if done else
                     f"- **{name}**: no warm slice reached slice 0's PSNR")
        if third:
            lines[-1] += (f"; the whole stack took {runs[0.0]['total_s']:.0f} s cold and {third['total_s']:.0f} s with "
                          f"warm_start=1/3, mean answer PSNR {np.mean([s['psnr_answer'] for s in cold]):.2f} vs "
                          f"{np.mean([s['psnr_answer'] for s in third['slices']]):.2f} dB.")
    text = "\n".join([
        "# Warm starts across a stack", "",
        "Made by `python benchmarks/warm_start.py --stack timelapse|focus -o docs/results/warm_start` and "
        "`--report` (one thread, torch " + __import__("torch").__version__ + ", the default CPU setting: "
        "the `cpu` preset, 800 iterations; 50% random pixels missing in each 96x96 slice). PSNR of the "
        "network's output against the clean slice.", "", *lines, "",
        md_table(["stack", "slice", "cold: s to slice 0's PSNR", "warm: s to slice 0's PSNR",
                  "warm / slice 0's time", "answer PSNR cold", "answer PSNR warm_start=1/3"], rows), ""])
    write_text_atomic(out / "README.md", text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=("timelapse", "focus"))
    parser.add_argument("--report", action="store_true", help="only remake README.md from the runs")
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "docs" / "results" / "warm_start")
    args = parser.parse_args(argv)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if args.stack:
        for warm_start in (0.0, 1.0, 1 / 3):
            path = out / f"{args.stack}-{warm_start:.3f}.json"
            if not path.exists():
                write_json(path, run(args.stack, warm_start))
                print(f"{args.stack} warm_start={warm_start:.2f} done", flush=True)
    report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
