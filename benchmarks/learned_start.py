"""A learned starting point for the cpu network (Reptile, after MetaDIP): does it reach quality sooner?

    python benchmarks/learned_start.py --threads 2 -o docs/results/learned_start

Meta-fits the ``cpu`` preset's skip net (one output channel) with Reptile (Nichol et al.
2018) on images that no benchmark tests: scikit-image's bundled brick, grass, gravel, moon,
page, text, clock, cell, chelsea, coffee, rocket and immunohistochemistry (grey, random
128x128 crops, 50% of the pixels dropped at random, a fresh network input each task).  Each
outer step runs ``--inner`` DIP steps from the current start (``DIPRun(start=...)``, Adam,
the preset's settings) and moves the start a step ``--outer-lr`` (decaying to 0) towards
where they ended.  Then, on the 11 Table 1 images' 128x128 centre crops with 50% missing (the
quality benchmark's cases, never seen in the fit), DIP from the learned start and from the
random one run ``--iterations`` steps each (the same seeds, masks and settings); the report
gives the PSNR at each count and the iterations the learned start needs to reach the random
start's final PSNR.  The learned weights are written to ``<out>/start.pt``.
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
from _report import command_line, write_report  # noqa: E402
from quality import TABLE1, _crop  # noqa: E402

TRAINING = ("brick", "grass", "gravel", "moon", "page", "text", "clock", "cell", "chelsea", "coffee", "rocket",
            "immunohistochemistry")


def training_images() -> list:
    from skimage import data
    from skimage.color import rgb2gray

    out = []
    for name in TRAINING:
        a = getattr(data, name)()
        a = rgb2gray(a) if a.ndim == 3 else a / 255.0
        out.append(a.astype(np.float32))
    return out


def meta_fit(config, steps: int, inner: int, outer_lr: float, crop: int, seed: int = 0) -> dict:
    """Reptile: the start weights after ``steps`` outer steps of ``inner`` DIP steps each."""
    import torch

    rng = np.random.default_rng(seed)
    images = [im for im in training_images() if min(im.shape) >= crop]
    cfg = config.replace(iterations=inner, report_every=inner, guard=False, snapshot_every=0, compute_ssim=False)
    torch.manual_seed(cfg.seed)  # Reptile begins at the seed's random start
    network = src_core.build_network(cfg.network, output_channels=1)
    start = {k: v.detach().clone() for k, v in network.state_dict().items()}
    for step in range(steps):
        im = images[rng.integers(len(images))]
        y, x = rng.integers(0, im.shape[0] - crop + 1), rng.integers(0, im.shape[1] - crop + 1)
        patch = im[y:y + crop, x:x + crop][None]
        mask = rng.random((crop, crop)) >= 0.5
        end = src_core.DIPRun(patch, mask, cfg.replace(seed=int(rng.integers(1 << 30))), start=start).run().weights
        eps = outer_lr * (1 - step / steps)
        for k, v in start.items():
            if v.is_floating_point():
                v.add_(eps * (end[k].to(v.dtype) - v))
            else:
                v.copy_(end[k])
    return start


def curve(image, mask, config, start) -> tuple[list, list, float]:
    """(iterations, PSNR at each report, seconds) of one run."""
    t0 = time.perf_counter()
    finished = src_core.DIPRun(image[None], mask, config, reference=image[None], start=start).run()
    return finished.history.iterations, finished.history.psnr, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "docs" / "results" / "learned_start")
    parser.add_argument("--steps", type=int, default=150, help="Reptile's outer steps")
    parser.add_argument("--inner", type=int, default=25, help="DIP steps per task")
    parser.add_argument("--outer-lr", type=float, default=0.5)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    src_core.speed.choose_threads(args.threads)
    torch.set_num_threads(args.threads)
    config = src_core.preset("cpu", device="cpu", report_every=25)
    t0 = time.perf_counter()
    start = meta_fit(config, args.steps, args.inner, args.outer_lr, args.crop)
    fit_s = time.perf_counter() - t0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.save(start, args.output_dir / "start.pt")
    cfg = config.replace(iterations=args.iterations, compute_ssim=False)
    rows, cases = [], {}
    for name in TABLE1:
        image = _crop(src_core.load_sample(f"table1/{name}.png"), 128).astype(np.float32) / 255.0
        mask = src_core.bernoulli_mask(image.shape, 0.5, 0)
        its, cold, cold_s = curve(image, mask, cfg, None)
        _, warm, warm_s = curve(image, mask, cfg, start)
        target = cold[-1]
        reach = next((it for it, p in zip(its, warm) if p >= target), None)
        cases[name] = {"iterations": its, "psnr_random": cold, "psnr_learned": warm, "seconds": [cold_s, warm_s],
                       "learned_reaches_random_final_at": reach}
        picks = [i for i, it in enumerate(its) if it in (100, 200, args.iterations)]
        rows.append(f"| {name} | " + " | ".join(f"{cold[i]:.2f} / {warm[i]:.2f}" for i in picks)
                    + f" | {reach if reach is not None else 'not within ' + str(args.iterations)} |")
        print(rows[-1], flush=True)
    speedups = [args.iterations / c["learned_reaches_random_final_at"] for c in cases.values()
                if c["learned_reaches_random_final_at"]]
    gains = [c["psnr_learned"][-1] - c["psnr_random"][-1] for c in cases.values()]
    lines = ["# A learned start (Reptile) against the random start, cpu network, Table 1 crops", "",
             f"Command: `{command_line(__file__, argv)}`", "",
             f"Machine: {src_core.timing.machine()}, {args.threads} threads. Reptile: {args.steps} outer steps of "
             f"{args.inner} DIP steps on {args.crop}x{args.crop} crops of scikit-image's {', '.join(TRAINING)} "
             f"(50% random pixels missing), outer step {args.outer_lr} decaying to 0: {fit_s:.0f} s. Then each "
             f"Table 1 128x128 centre crop with 50% missing (mask seed 0), {args.iterations} iterations from the "
             "random start (seed 0) and from the learned one; PSNR of DIP's output (no held-out pixels, nothing "
             "kept), random / learned:", "",
             f"| image | at 100 | at 200 | at {args.iterations} | learned reaches random's final at |",
             "|---|---|---|---|---|", *rows, "",
             f"Mean final gain {np.mean(gains):+.2f} dB (from {min(gains):+.2f} to {max(gains):+.2f}); "
             "the learned start "
             f"reached the random start's final PSNR on {len(speedups)} of {len(cases)} images, "
             + (f"{np.median(speedups):.1f}x sooner (median)." if speedups else "never.")]
    write_report(args.output_dir, "learned_start", lines, {"command": command_line(__file__, argv), "fit_s": fit_s,
                                                           "cases": cases})
    return 0


if __name__ == "__main__":
    sys.exit(main())
