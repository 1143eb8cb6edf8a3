"""Seconds per iteration against torch threads, on an idle machine and beside other busy jobs.

    python benchmarks/threads.py --load 0 2

For each background load (that many busy processes, each spinning one core with
a float32 matrix product, started by this script), times the ``cpu`` preset at
64x64 and 128x128 with 1 thread and with every usable core.  OpenMP threads spin
while they wait for each other, so threads beyond the free cores cost far more
than they bring; this is why runs default to the free cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src_core import DIPRun, bernoulli_mask, preset, speed  # noqa: E402


def _spin(stop):
    a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    while not stop.is_set():
        a = a @ a
        a /= np.abs(a).max() + 1.0


def _time(threads: int, size: int, iterations: int) -> float:
    cfg = preset("cpu", device="cpu", iterations=iterations, report_every=iterations)
    image = np.random.default_rng(0).random((1, size, size), dtype=np.float32)
    run = DIPRun(image, bernoulli_mask((size, size), 0.5, 0), cfg, threads=threads)
    return run.run().history.timings["s_per_iteration"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=int, nargs="+", default=[0, 2], help="busy background processes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)
    cores = speed.usable_cores()
    print(f"usable cores: {cores}")
    print("| background load | size | 1 thread s/it | " + f"{cores} threads s/it | ratio |")
    print("|---|---|---|---|---|")
    for load in args.load:
        stop = mp.Event()
        procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(load)]
        for p in procs:
            p.start()
        time.sleep(2.0 if load else 0.0)
        try:
            for size in args.sizes:
                one = _time(1, size, args.iterations)
                many = _time(cores, size, args.iterations)
                print(f"| {load} busy | {size} | {one:.3f} | {many:.3f} | x{many / one:.1f} |", flush=True)
        finally:
            stop.set()
            for p in procs:
                p.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
