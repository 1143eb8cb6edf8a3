"""What keeping the observed pixels (``keep_observed``) is worth: Kate 256, keep on against off.

    .venv/bin/python benchmarks/keep_observed.py

The answer's default puts the input back wherever it was observed.  This measures the
PSNR that buys on the README's text-inpainting demo (the paper's Kate photo and text mask,
downscaled to 256x256 as in benchmarks/quality.py and ui_gaps.py), at the same seed and
the cpu preset's 800 iterations, for two configurations: the default answer (5% of the
observed pixels held out, best-validated iterate blended with the biharmonic fill) and
pure DIP (``validate=0, classical=None``).  Four runs through ``src_core.restore``; the
results go to ``docs/results/keep_observed.json`` and ``.md`` (written atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src_core  # noqa: E402
from src_core.cli import _downscale2  # noqa: E402
from src_core.io import write_text  # noqa: E402

VARIANTS = {"default (validate 5%, biharmonic blend)": {},
            "pure DIP (validate=0, classical=None)": {"validate": 0, "classical": None}}


def kate_256():
    clean = _downscale2(src_core.load_sample("dip/kate.png"))
    observed = _downscale2(src_core.load_mask(src_core.data_path("dip/kate_mask.png")).astype(np.float32)) > 0.99
    return clean, observed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=None, help="default: the cpu preset's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "benchmarks/keep_observed.py", *(argv or sys.argv[1:])])
    clean, observed = kate_256()
    extra = {"iterations": args.iterations} if args.iterations else {}
    rows = []
    for variant, options in VARIANTS.items():
        for keep in (True, False):
            t0 = time.perf_counter()
            result = src_core.restore(clean, observed, task="inpaint", reference=clean, preset="cpu",
                                      keep_observed=keep, threads=args.threads, device="cpu",
                                      seed=args.seed, **options, **extra)
            wall = time.perf_counter() - t0
            s, h = result.history.summary, result.history
            rows.append({"variant": variant, "keep_observed": keep, "psnr_answer": s["psnr_answer"],
                         "psnr_dip": s["psnr_dip"], "psnr_classical": s.get("psnr_classical"),
                         "psnr_corrupted": s["psnr_corrupted"], "blend_alpha": s.get("blend_alpha"),
                         "answer_iteration": s.get("answer_iteration"),
                         "iterations_run": h.timings.get("iterations"), "wall_s": wall,
                         "optimise_s": h.timings.get("optimise_s")})
            print(f"{variant}, keep_observed={keep}: {s['psnr_answer']:.2f} dB "
                  f"(corrupted {s['psnr_corrupted']:.2f} dB), {wall:.0f} s", flush=True)
    meta = {"case": "Kate 256 (dip/kate.png + dip/kate_mask.png, 2x2 box downscale, observed = mask > 0.99)",
            "shape": list(clean.shape), "missing_fraction": float(1 - observed.mean()), "preset": "cpu",
            "seed": args.seed, "threads": args.threads, "command": command, "runs": rows}
    write_text(args.out / "keep_observed.json", json.dumps(meta, indent=1))
    lines = ["# keep_observed on against off: Kate 256", "",
             f"Kate text inpainting, 256x256 ({meta['missing_fraction']:.1%} of pixels missing), cpu "
             f"preset, seed {args.seed}, {args.threads} torch threads, same configuration with the "
             "answer's observed pixels kept (on) or left as the network's output (off).  PSNR in dB "
             "against the clean image; DIP PSNR is the network's own output (observed pixels put back when on).  "
             "Wall seconds are from a shared 2-core machine and vary with its load; they are not a speed measure.",
             "", f"    {command}", "",
             "| variant | keep_observed | answer PSNR | DIP PSNR | corrupted input PSNR | iterations "
             "| answer iteration | blend alpha | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        alpha = "-" if r["blend_alpha"] is None else f"{r['blend_alpha']:.3f}"
        lines.append(f"| {r['variant']} | {'on' if r['keep_observed'] else 'off'} | {r['psnr_answer']:.2f} "
                     f"| {r['psnr_dip']:.2f} | {r['psnr_corrupted']:.2f} | {r['iterations_run']} "
                     f"| {r['answer_iteration']} | {alpha} | {r['wall_s']:.0f} |")
    write_text(args.out / "keep_observed.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
