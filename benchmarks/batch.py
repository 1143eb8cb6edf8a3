"""Batch throughput on Dask distributed: a plain loop against 1 and 2 local workers.

    python benchmarks/batch.py --out docs/results/batch

Eight 64x64 crops of scikit-image's camera (denoise, sigma 0.1 noise, the `cpu` preset at
``--iterations``, one torch thread a run) restored three ways in one process, in this order:
a plain loop of ``src_core.restore`` calls, ``restore_many`` on a LocalCluster of 1 worker, and
on 2 workers.  Reports items per minute and the Dask overhead per item (1 worker against the
loop, cluster start included).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src_core  # noqa: E402
from src_core.batch import collect, restore_many  # noqa: E402
from src_core.io import write_image  # noqa: E402
from src_core.reports import md_table  # noqa: E402
from _report import command_line, write_report  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--iterations", type=int, default=150)
    args = p.parse_args(argv)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "in").mkdir(parents=True)
    from skimage import data

    rng = np.random.default_rng(0)
    camera = data.camera().astype(np.float32) / 255
    for k in range(args.items):
        crop = camera[64 * (k // 4): 64 * (k // 4) + 64, 64 * (k % 4): 64 * (k % 4) + 64]
        noisy = np.clip(crop + rng.normal(0, 0.1, crop.shape), 0, 1)
        write_image(work / "in" / f"crop{k}.png", (noisy * 255).astype(np.uint8))
    items = collect(work / "in")
    settings = dict(task="denoise", preset="cpu", iterations=args.iterations, device="cpu")
    t0 = time.perf_counter()
    for item in items:
        src_core.restore(src_core.read_image(item.image), threads=1, **settings)
    plain = time.perf_counter() - t0
    rows, record = [["plain loop", "-", f"{plain:.1f}", f"{60 * len(items) / plain:.1f}"]], {"plain_s": plain}
    for workers in (1, 2):
        t0 = time.perf_counter()
        summary = restore_many(items, work / f"out{workers}", workers=workers, **settings)
        seconds = time.perf_counter() - t0
        assert len(summary.done) == len(items), summary.failed
        record[f"workers_{workers}_s"] = seconds
        rows.append(["restore_many, LocalCluster", str(workers), f"{seconds:.1f}", f"{60 * len(items) / seconds:.1f}"])
    ratio = record["workers_1_s"] / record["workers_2_s"]
    overhead = (record["workers_1_s"] - plain) / len(items)
    record.update(speedup_2_vs_1=ratio, overhead_per_item_s=overhead, items=len(items), iterations=args.iterations)
    command = command_line(__file__, argv)
    md = ["# Batches on Dask distributed: items per minute", "",
          f"{len(items)} noisy 64x64 camera crops, denoise, `cpu` preset, {args.iterations} iterations, one "
          f"torch thread a run, this machine ({src_core.speed.usable_cores()} usable cores).", "",
          md_table(["path", "workers", "seconds (cluster start included)", "items per minute"], rows), "",
          f"- 2 workers against 1: x{ratio:.2f}.",
          f"- Dask overhead per item (1 worker against the plain loop, cluster start included): {overhead:+.2f} s.",
          f"- Command: `{command}`", ""]
    shutil.rmtree(work, ignore_errors=True)
    write_report(args.out, "batch", md, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
