"""Restarts: is the mean of K restarts worth its cost, and does their spread say where the fill is wrong?

    python benchmarks/restarts.py --threads 2 --restarts 3 --iterations 400 -o docs/results/restarts

On the inpainting cases of ``benchmarks/quality.py`` (the default run's settings: the ``cpu``
preset, 5% of observed pixels held out, observed pixels kept, the blend with the classical
fill), each case runs twice:

* ``restarts=K`` at N iterations: the mean of K networks (seeds 0..K-1), and their spread;
* one network at K x N iterations: the same CPU time.

Member 0 of the restarts is, bit for bit, the one-network run of N iterations (seed 0;
``tests/test_restarts.py``), so "one run, equal iterations" is read from it.  For the spread,
over the missing pixels (every channel value on its own): the Spearman rank correlation
between the spread and DIP's absolute error, and DIP's RMS error in the 10% of pixels with
the largest and the smallest spread.  Each case is written to ``<out>/cases/<case>.json`` at
once and skipped on a rerun; ``<out>/restarts.md`` is remade from all of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import src_core  # noqa: E402
from src_core.engine import Finished  # noqa: E402
from _report import command_line, write_report  # noqa: E402
from quality import cases, run_all  # noqa: E402


def fit(kind, image, mask, reference, **settings):
    """One prepared run to its end: (problem, last event, answer, CPU seconds)."""
    t0 = time.process_time()
    problem = src_core.prepare(image, mask, task=kind, reference=reference, device="cpu", **settings)
    finished = None
    for event in problem.run(0):
        if isinstance(event, Finished):
            finished = event
    answer = problem.answer(0, finished)
    return problem, finished, answer, time.process_time() - t0


def spread_scores(spread, error, share=0.1) -> dict:
    """How well the spread ranks the error: Spearman's rho, and the RMS error in the most and the
    least uncertain ``share`` of the pixels (ties broken by position)."""
    from scipy.stats import spearmanr

    order = np.argsort(spread, kind="stable")
    n = max(1, int(round(share * len(order))))
    rms = lambda idx: float(np.sqrt(np.mean(error[idx] ** 2)))  # noqa: E731
    return {"spearman": float(spearmanr(spread, error).statistic), "rms_error_top": rms(order[-n:]),
            "rms_error_bottom": rms(order[:n]), "rms_error_all": rms(order),
            "mean_spread_top": float(spread[order[-n:]].mean()), "mean_spread_bottom": float(spread[order[:n]].mean())}


def run_case(name, kind, builder, k: int, iterations: int) -> dict:
    image, mask, reference = builder()
    problem, finished, answer, cpu_k = fit(kind, image, mask, reference, iterations=iterations, restarts=k)
    s = finished.history.summary
    ref = problem.references[0]
    missing = ~problem.masks[0]
    spread = problem.spread(0, finished)
    dip_error = np.abs(finished.output - ref)[missing]
    answer_error = np.abs(answer - ref)[missing]
    _, long_run, _, cpu_long = fit(kind, image, mask, reference, iterations=k * iterations)
    long = long_run.history.summary
    return {"case": name, "task": kind, "shape": list(np.shape(image)), "restarts": k, "iterations": iterations,
            "psnr_classical": s["psnr_classical"],
            "psnr_dip_mean": s["psnr_dip"], "psnr_answer_mean": s["psnr_answer"], "alpha_mean": s.get("blend_alpha"),
            "psnr_dip_members": s["psnr_dip_members"],
            "psnr_dip_one_equal_iterations": s["psnr_dip_members"][0],
            "psnr_dip_one_equal_time": long["psnr_dip"], "psnr_answer_one_equal_time": long["psnr_answer"],
            "alpha_one_equal_time": long.get("blend_alpha"),
            "cpu_s_restarts": cpu_k, "cpu_s_one_equal_time": cpu_long,
            "spread_vs_dip_error": spread_scores(spread[missing], dip_error),
            "spread_vs_answer_error": spread_scores(spread[missing], answer_error),
            "missing_values": int(missing.sum()), "torch_threads": __import__("torch").get_num_threads()}


def report(out: Path, records: dict, command: str) -> None:
    first = next(iter(records.values()))
    k, n = first["restarts"], first["iterations"]
    lines = [f"# Restarts: the mean of {k} against one run, and the spread against the error", "",
             f"Command: `{command}`", "",
             f"Machine: {src_core.timing.machine()}, {first['torch_threads']} threads. Each case: "
             f"`restarts={k}` at {n} iterations (the default run's settings otherwise) and one network at "
             f"{k * n} iterations (equal CPU time). \"One run, equal iterations\" is member 0 of the restarts "
             "(the seed-0 run, to float32 rounding). PSNRs in dB, DIP alone with the observed pixels kept; the "
             "answer is the blend with the classical fill. Spread statistics are over the missing pixels: "
             "Spearman's rho between the spread and DIP's absolute error, and DIP's RMS error (in [0, 1] "
             "units) in the 10% of pixels with the largest and the smallest spread.", "",
             f"| case | classical | DIP one run, {n} it | DIP mean of {k}, {n} it | DIP one run, {k * n} it | "
             f"answer, mean of {k} | answer, one run {k * n} it | rho | RMS err top 10% | RMS err bottom 10% | "
             "CPU s (restarts / one long) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records.values():
        sp = r["spread_vs_dip_error"]
        lines.append(f"| {r['case']} | {r['psnr_classical']:.2f} | {r['psnr_dip_one_equal_iterations']:.2f} | "
                     f"{r['psnr_dip_mean']:.2f} | {r['psnr_dip_one_equal_time']:.2f} | {r['psnr_answer_mean']:.2f} | "
                     f"{r['psnr_answer_one_equal_time']:.2f} | {sp['spearman']:.2f} | {sp['rms_error_top']:.4f} | "
                     f"{sp['rms_error_bottom']:.4f} | {r['cpu_s_restarts']:.0f} / {r['cpu_s_one_equal_time']:.0f} |")
    rs = list(records.values())

    def mean(key, sub=None):
        return float(np.mean([r[key] if sub is None else r[key][sub] for r in rs]))

    gain_iter = [r["psnr_dip_mean"] - r["psnr_dip_one_equal_iterations"] for r in rs]
    gain_time = [r["psnr_dip_mean"] - r["psnr_dip_one_equal_time"] for r in rs]
    answer_time = [r["psnr_answer_mean"] - r["psnr_answer_one_equal_time"] for r in rs]
    ratio = [r["spread_vs_dip_error"]["rms_error_top"] / r["spread_vs_dip_error"]["rms_error_bottom"] for r in rs]
    rhos = [r["spread_vs_dip_error"]["spearman"] for r in rs]
    lines += ["", f"Over the {len(rs)} cases: the mean of {k} against one run of equal iterations "
              f"{np.mean(gain_iter):+.2f} dB (min {min(gain_iter):+.2f}, max {max(gain_iter):+.2f}); against one run "
              f"of equal CPU time {np.mean(gain_time):+.2f} dB "
              f"(better on {sum(g > 0 for g in gain_time)} of {len(rs)}); "
              f"the blended answer against the long run's answer {np.mean(answer_time):+.2f} dB "
              f"(better on {sum(g > 0 for g in answer_time)}). Spread against DIP's error: mean rho "
              f"{mean('spread_vs_dip_error', 'spearman'):.2f} (from {min(rhos):.2f} to {max(rhos):.2f}); "
              "the RMS error in the most uncertain 10% is "
              f"{np.mean(ratio):.1f}x that in the least uncertain 10% (median {np.median(ratio):.1f}x). Against the "
              f"blended answer's error: mean rho {mean('spread_vs_answer_error', 'spearman'):.2f}."]
    write_report(out, "restarts", lines, {"command": command, "cases": records})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "docs" / "results" / "restarts")
    parser.add_argument("--only", nargs="+", help="case names (default: every inpainting case)")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    src_core.speed.choose_threads(args.threads)
    todo = {name: c for name, c in cases().items() if c[0] in ("random", "inpaint")}
    warm = np.random.default_rng(0).random((64, 64), dtype=np.float32)  # the first run's one-time costs
    fit("random", warm, None, warm, iterations=5, restarts=2)
    run_all(args.output_dir, todo, args.only,
            lambda name, kind, builder: run_case(name, kind, builder, args.restarts, args.iterations),
            lambda name, r: (f"{name}: one {r['psnr_dip_one_equal_iterations']:.2f}, mean {r['psnr_dip_mean']:.2f}, "
                             f"one x{args.restarts} {r['psnr_dip_one_equal_time']:.2f} dB; "
                             f"rho {r['spread_vs_dip_error']['spearman']:.2f}"),
            report, command_line(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
