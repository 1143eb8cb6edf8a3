"""Seconds per iteration of the engine's default loop, standard network, 50% missing.

    python benchmarks/engine_speed.py --sizes 128 256 --iterations 20

Times full DIP iterations (forward, backward, Adam step, noise perturbation)
through the public DIPRun, first iteration included; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import src_core
from src_core import DIPRun, bernoulli_mask, preset


def time_engine(size: int, iterations: int, device: str, preset_name: str) -> dict:
    rng = np.random.default_rng(0)
    image = rng.random((1, size, size), dtype=np.float32)
    mask = bernoulli_mask((size, size), 0.5, seed=0)
    cfg = preset(preset_name, iterations=iterations, report_every=iterations, device=device)
    # One report at the end: the only host syncs are the guard's (every 50 steps) and that one.
    finished = DIPRun(image, mask, cfg).run()
    return {"size": size, "s_per_iteration": finished.history.timings["s_per_iteration"],
            "iterations": iterations}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="table1", help="network and optimiser settings (default: standard)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"src_core {src_core.__version__}, preset {args.preset}")
    print("| size | s / iteration | iterations timed |")
    print("|---|---|---|")
    for size in args.sizes:
        row = time_engine(size, args.iterations, args.device, args.preset)
        print(f"| {size}x{size} | {row['s_per_iteration']:.3f} | {row['iterations']} |", flush=True)


if __name__ == "__main__":
    main()
