"""Measured seconds per iteration against ``src_core.speed.estimate_time`` (the estimate shown
before a run), for the networks a CPU user runs.

    python benchmarks/time_model.py            # prints a Markdown table; run it on a quiet machine

The estimate's two rates (``speed.CPU_FLOPS_PER_THREAD``, ``CPU_ELEMENTS_PER_THREAD``) were
fitted to this table's 1-thread rows on a 2-core AMD EPYC with AVX2 (float32).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src_core import DIPRun, bernoulli_mask, preset, speed  # noqa: E402

CASES = (("cpu", 128, 30), ("cpu", 256, 12), ("table1", 128, 6))


def main() -> int:
    print("| threads | preset | size | GFLOP/it | measured s/it | estimate s/it | estimate / measured |")
    print("|---|---|---|---|---|---|---|")
    for threads in (1, 2):
        speed.choose_threads(threads)  # the runs use this count, not the free cores
        for name, size, iterations in CASES:
            cfg = preset(name, device="cpu", iterations=iterations, report_every=iterations)
            image = np.random.default_rng(0).random((1, size, size), dtype=np.float32)
            finished = DIPRun(image, bernoulli_mask((size, size), 0.5, 0), cfg).run()
            measured = finished.history.timings["s_per_iteration"]
            estimate = speed.estimate_time(cfg, 1, (size, size))
            print(f"| {threads} | {name} | {size} | {estimate['gflop_per_iteration']:.1f} | {measured:.3f} | "
                  f"{estimate['s_per_iteration']:.3f} | {estimate['s_per_iteration'] / measured:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
