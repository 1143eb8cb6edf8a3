"""Tiles cold against warm (each tile from the last one's weights, a third of the iterations).

    python benchmarks/warm_start_tiles.py cold|warm house|brick > docs/results/warm_start/tiles-<mode>-<image>.json

A 256x256 image, 50% random pixels missing, 2x2 tiles of 160 px (overlap 32), the cpu preset, one
thread, no classical blend; warm lets the tiles use the stack's warm start (they do not by default).
Prints the process CPU seconds and the PSNR of the blended answer.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from skimage import data
from skimage.color import rgb2gray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import src_core  # noqa: E402
import src_core.tiled as tiled_mod  # noqa: E402

warm_flag = sys.argv[1] == "warm"
name = sys.argv[2]
if warm_flag:  # the experiment: let tiles warm-start
    real = tiled_mod.solve_parts
    tiled_mod.solve_parts = lambda parts, **kw: real(parts, **{**kw, "warm": True})
if name == "house":
    img = src_core.load_sample("table1/house.png").astype(np.float32) / 255
else:
    img = getattr(data, name)()
    img = (rgb2gray(img) if img.ndim == 3 else img / 255.0)[:512, :512]
    img = img.reshape(256, 2, 256, 2).mean(axis=(1, 3)).astype(np.float32)
img = img[:256, :256]
t0 = time.process_time()
r = src_core.restore_tiled(img, task="random", tile=160, overlap=32, device="cpu", threads=1, classical=None)
cpu = time.process_time() - t0
psnr = src_core.psnr_ssim(r.image[None], img[None], with_ssim=False)[0]
print(json.dumps({"mode": sys.argv[1], "image": name, "cpu_s": cpu, "psnr": psnr,
                  "iterations": [h.config["iterations"] for h in r.histories]}))
