"""One engine run of fixed size, for timing a checkout against another as whole processes.

    python benchmarks/engine_speed.py <checkout> <iterations> [--channels 3] [--early-stop]

Imports ``src_core`` from ``<checkout>`` and runs the ``cpu`` preset on a 128x128
image with a 50% mask for ``<iterations>`` iterations on one CPU thread; prints the
engine's own seconds per iteration.  ``--early-stop`` keeps the ES-WMV window (W=100,
patience beyond the run, so it never stops) to time what the window costs.  Time two
checkouts in alternation (e.g. with ``/usr/bin/time``) to compare a change of the loop
with the code before it.
"""

import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("checkout")
parser.add_argument("iterations", type=int)
parser.add_argument("--channels", type=int, default=1)
parser.add_argument("--early-stop", action="store_true")
args = parser.parse_args()
sys.path.insert(0, args.checkout)

import numpy as np  # noqa: E402

from src_core import DIPRun, bernoulli_mask, preset  # noqa: E402

img = np.random.default_rng(0).random((args.channels, 128, 128), dtype=np.float32)
cfg = preset("cpu", iterations=args.iterations, report_every=50, device="cpu", early_stop=args.early_stop,
             es_patience=args.iterations + 1)
fin = DIPRun(img, bernoulli_mask((128, 128), 0.5, 0), cfg, reference=img, threads=1).run()
assert fin.history.early_stop is None  # the whole run was timed
print(f"{fin.history.timings['s_per_iteration']:.4f} s/iteration")
