"""Poisson against MSE, and the Deep Decoder beside the skip net, on photon-limited fluorescence.

Synthetic fluorescence (Gaussian blobs and filaments on a dim background, a fixed seed) at a
peak of 5, 20 and 100 photons per pixel, with Poisson noise; denoising, and deconvolution of
a Gaussian PSF (sigma 1.5 px).  Each DIP run is the raw network answer (``validate=0``,
``classical=None``, no blend) with the task's CPU settings; the classical answers are NLM
(denoising) and Richardson-Lucy (deconvolution), as ``src_core.classical`` computes them.
PSNR against the noise-free image in photons, peak = its maximum.

    python benchmarks/fidelity.py --size 96 --iterations 600
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _report import command_line, write_report

import src_core
from src_core.classical import classical_answer
from src_core.operators import Blur, gaussian_psf


def specimen(size: int, seed: int = 0) -> np.ndarray:
    """A noise-free fluorescence image in [0, 1]: blobs (cells) and thin filaments."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    img = np.full((size, size), 0.05)
    for _ in range(size // 12):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, size / 12)
        img += rng.uniform(0.4, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    for _ in range(size // 24):
        a, b, c = rng.normal(size=3)
        dist = np.abs(a * (xx - size / 2) + b * (yy - size / 2) + c * size / 4) / np.hypot(a, b)
        img += 0.5 * np.exp(-dist ** 2 / 2.0)
    return (img / img.max()).astype(np.float32)


def psnr(estimate, truth) -> float:
    mse = float(np.mean((np.asarray(estimate, np.float64) - truth) ** 2))
    return 10 * np.log10(float(truth.max()) ** 2 / mse)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--photons", type=float, nargs="+", default=[5, 20, 100])
    p.add_argument("--out", type=Path, default=Path("docs/results/fidelity"))
    args = p.parse_args(argv)
    clean01 = specimen(args.size)
    psf = gaussian_psf(1.5)
    rows, record = [], {"command": command_line(__file__, argv), "cases": []}
    for photons in args.photons:
        truth = clean01 * photons
        for task in ("denoise", "deconvolve"):
            rng = np.random.default_rng(int(photons))
            if task == "deconvolve":
                import torch
                blurred = Blur(psf).apply(torch.from_numpy(clean01)[None, None]).numpy()[0, 0] * photons
            else:
                blurred = truth
            counts = rng.poisson(np.clip(blurred, 0, None)).astype(np.uint16)
            extra = {"psf": 1.5} if task == "deconvolve" else {}
            runs = [("skip", "mse"), ("skip", "poisson")] + ([("decoder", "mse"), ("decoder", "poisson")]
                                                               if task == "denoise" else [])
            case = {"photons": photons, "task": task, "noisy": psnr(counts, truth)}
            op = src_core.get_task(task).operator(**extra)
            method = src_core.get_task(task).classical
            unit_counts = counts.astype(np.float32) / max(float(counts.max()), 1.0)
            t = time.perf_counter()
            classical = classical_answer(method, unit_counts[None], np.ones((1, *counts.shape), bool), op)
            case[method] = psnr(classical[0] * max(float(counts.max()), 1.0), truth)
            case[f"{method}_s"] = time.perf_counter() - t
            for arch, fid in runs:
                net = {} if arch == "skip" else {"architecture": "decoder", "scales": 4, "channels": 64,
                                                 "input_channels": 64}
                t = time.perf_counter()
                res = src_core.restore(counts, task=task, preset="cpu", iterations=args.iterations,
                                       validate=0, classical=None, fidelity=fid, threads=1,
                                       **net, **extra)
                key = f"{arch}_{fid}"
                case[key] = psnr(res.image.astype(np.float64), truth)
                case[f"{key}_s"] = time.perf_counter() - t
                print(photons, task, key, round(case[key], 2), flush=True)
            record["cases"].append(case)
            rows.append(case)
    lines = ["# Poisson against MSE; the Deep Decoder beside the skip net", "",
             f"Command: `{record['command']}`", "",
             f"Synthetic fluorescence {args.size}x{args.size}, Poisson noise; raw DIP answers (no validation, "
             f"no blend), the `cpu` preset at {args.iterations} iterations, 1 thread. PSNR in dB against the "
             "noise-free image (peak = its maximum).", "",
             "| photons | task | noisy | classical | skip, MSE | skip, Poisson | decoder, MSE | decoder, Poisson |",
             "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        method = "nlm" if c["task"] == "denoise" else "richardson-lucy"
        cells = " | ".join(f"{c[k]:.2f}" if k in c else "-"
                           for k in ("skip_mse", "skip_poisson", "decoder_mse", "decoder_poisson"))
        lines.append(f"| {c['photons']:g} | {c['task']} | {c['noisy']:.2f} | {method} {c[method]:.2f} | {cells} |")
    write_report(args.out, "fidelity", lines, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
