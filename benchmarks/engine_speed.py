"""One engine run of fixed size, for timing a checkout against another as whole processes.

    python benchmarks/engine_speed.py <checkout> <iterations>

Imports ``src_core`` from ``<checkout>`` and runs the ``cpu`` preset on a 128x128
image with a 50% mask for ``<iterations>`` iterations on one CPU thread; prints the
engine's own seconds per iteration.  Time two checkouts in alternation (e.g. with
``/usr/bin/time``) to compare a change of the loop with the code before it.
"""

import sys

sys.path.insert(0, sys.argv[1])

import numpy as np  # noqa: E402

from src_core import DIPRun, bernoulli_mask, preset  # noqa: E402

img = np.random.default_rng(0).random((1, 128, 128), dtype=np.float32)
cfg = preset("cpu", iterations=int(sys.argv[2]), report_every=50, device="cpu")
fin = DIPRun(img, bernoulli_mask((128, 128), 0.5, 0), cfg, reference=img, threads=1).run()
print(f"{fin.history.timings['s_per_iteration']:.4f} s/iteration")
