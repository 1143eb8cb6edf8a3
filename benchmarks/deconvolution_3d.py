"""Deconvolution of a z-stack: DIP per slice against 3D Richardson-Lucy on a widefield phantom.

    python benchmarks/deconvolution_3d.py --out docs/results/deconvolution_3d

A known volume (beads and filaments on a dim background) is blurred with a
widefield-like 3D PSF and given Poisson noise at ``--photons`` photons at the
phantom's brightest voxel.  Each method sees only the noisy stack and the PSF:

* scikit-image's Richardson-Lucy per slice with the PSF's in-focus plane (what a
  2D tool does) and in 3D with the whole PSF, at several iteration counts, each
  timed; the best count is picked with the ground truth (an ORACLE, RL's best case);
* DIP through ``src_core.restore(task="deconvolve", psf=<the 3D PSF>, stack="z")``:
  the network runs per slice with the in-focus plane, its classical partner is 3D
  Richardson-Lucy (30 iterations), blended by the held-out pixels; no ground truth.

The PSF: each plane a Gaussian whose width grows with defocus as a beam's does,
``sigma(d) = sigma_xy * sqrt(1 + (d / z_r)^2)``, and every plane carries the same
light, as a widefield microscope's does (out-of-focus light is spread, not lost),
cut at ``--psf-planes``.  PSNR over the whole volume, data range 1, clipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src_core  # noqa: E402
from src_core.classical import richardson_lucy, richardson_lucy_volume  # noqa: E402
from src_core.io import json_default  # noqa: E402
from src_core.reports import md_table, write_json, write_text_atomic  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line  # noqa: E402


def phantom(depth: int, size: int, seed: int) -> np.ndarray:
    """Beads (balls of 1.5-2.5 voxels' radius) and filaments (smooth 3D curves) in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    vol = np.full((depth, size, size), 0.05)
    z, y, x = np.mgrid[:depth, :size, :size]
    for _ in range(size // 5):
        cz, cy, cx = rng.uniform(0.1, 0.9, 3) * (depth, size, size)
        r = rng.uniform(1.5, 2.5)
        ball = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r
        vol[ball] = np.maximum(vol[ball], rng.uniform(0.6, 1.0))
    lines = np.zeros_like(vol)
    for _ in range(size // 10):
        start, end = rng.uniform(0, 1, (2, 3)) * (depth - 1, size - 1, size - 1)
        bend = rng.normal(0, 0.15, 3) * (depth, size, size)
        for t in np.linspace(0, 1, 4 * size):
            point = (1 - t) * start + t * end + 4 * t * (1 - t) * bend
            iz, iy, ix = np.round(point).astype(int)
            if 0 <= iz < depth and 0 <= iy < size and 0 <= ix < size:
                lines[iz, iy, ix] = max(lines[iz, iy, ix], rng.uniform(0.4, 0.7))
    vol = np.maximum(vol, np.clip(gaussian_filter(lines, 0.7) * 6, 0, 0.7))
    return np.clip(gaussian_filter(vol, 0.5), 0, 1).astype(np.float32)


def widefield_psf(planes: int, sigma_xy: float, z_r: float) -> np.ndarray:
    """(planes, Y, X): each plane a Gaussian of the defocus-widened sigma, each with equal light."""
    half = planes // 2
    widest = sigma_xy * np.sqrt(1 + (half / z_r) ** 2)
    r = np.arange(2 * int(np.ceil(3 * widest)) + 1) - int(np.ceil(3 * widest))
    out = []
    for d in range(-half, half + 1):
        s = sigma_xy * np.sqrt(1 + (d / z_r) ** 2)
        g = np.exp(-0.5 * (r / s) ** 2)
        plane = np.outer(g, g)
        out.append(plane / plane.sum())
    psf = np.stack(out)
    return (psf / psf.sum()).astype(np.float32)


def blur3d(volume: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """The volume convolved with the PSF, mirrored borders (as the methods assume)."""
    from scipy.signal import fftconvolve

    pads = [(k // 2, k // 2) for k in psf.shape]
    padded = np.pad(volume.astype(np.float64), pads, mode="symmetric")
    return fftconvolve(padded, psf, mode="valid")


def degrade(clean: np.ndarray, psf: np.ndarray, photons: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    counts = rng.poisson(np.clip(blur3d(clean, psf), 0, None) * photons)
    return np.clip(counts / photons, 0, 1).astype(np.float32)


def psnr(estimate, truth) -> float:
    mse = float(np.mean((np.clip(estimate, 0, 1).astype(np.float64) - truth) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def volume_psnr_of_slices(slice_psnrs) -> float:
    """The volume's PSNR from its equal-sized slices' PSNRs (data range 1): their mean MSE."""
    mse = np.mean([10 ** (-p / 10) for p in slice_psnrs])
    return float(10 * np.log10(1.0 / mse))


def torch_blur(psf: np.ndarray, shape: tuple):
    """:func:`blur3d` in torch, for (1, 1, Z, Y, X) tensors of ``shape`` (differentiable): an FFT
    convolution at the padded size, whose valid part is the linear one."""
    import torch

    pads = [k // 2 for k in psf.shape]
    padded_shape = tuple(n + 2 * p for n, p in zip(shape, pads))
    otf = torch.fft.rfftn(torch.from_numpy(np.ascontiguousarray(psf)), s=padded_shape)
    k = psf.shape

    def blur(x):
        for dim, pad in zip((2, 3, 4), pads):  # mirrored with the edge voxel, as numpy's "symmetric"
            if pad:
                low, high = x.narrow(dim, 0, pad), x.narrow(dim, x.shape[dim] - pad, pad)
                x = torch.cat([low.flip(dim), x, high.flip(dim)], dim)
        full = torch.fft.irfftn(torch.fft.rfftn(x, s=padded_shape) * otf, s=padded_shape)
        return full[..., k[0] - 1:k[0] - 1 + shape[0], k[1] - 1:k[1] - 1 + shape[1], k[2] - 1:k[2] - 1 + shape[2]]

    return blur


def dip_volume(noisy: np.ndarray, psf: np.ndarray, clean: np.ndarray, iterations: int, every: int = 50) -> dict:
    """A 3D generator fitted through the 3D blur: ``benchmarks/volume.py``'s skip network in 3D
    (the ``cpu`` preset's architecture with Conv3d), the deconvolve task's CPU settings (lr,
    input noise 1/30, the answer the 0.99 EMA of outputs), the loss the MSE between the
    blurred output and the stack (blur: FFT convolution, mirrored borders).  No held-out
    voxels, so no early stop: the EMA at the end is the answer, and the best EMA on the way
    (ORACLE) is reported beside it."""
    import torch
    from volume import SkipNet3d

    cfg = src_core.make_config("deconvolve", "cpu")
    torch.manual_seed(cfg.seed)
    depth, h, w = noisy.shape
    net = SkipNet3d(cfg.network, depth)
    gen = torch.Generator().manual_seed(cfg.seed)
    z = torch.rand(1, cfg.network.input_channels, depth, h, w, generator=gen) * cfg.input_scale
    noise, noise_gen = torch.empty_like(z), torch.Generator().manual_seed(cfg.seed + 1)
    blur = torch_blur(psf, noisy.shape)
    target = torch.from_numpy(noisy)[None, None]

    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=True)
    ema, curve, t0 = None, [], time.perf_counter()
    for it in range(1, iterations + 1):
        noise.normal_(generator=noise_gen)
        out = net(z + cfg.sigma_p * noise)
        loss = (blur(out) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            rate = cfg.ema or 0.99
            ema = out.detach().clone() if ema is None else ema.mul_(rate).add_(out.detach(), alpha=1 - rate)
        if it % every == 0:
            curve.append((it, psnr(ema[0, 0].numpy(), clean)))
            print(f"  3D generator: {it} iterations, {time.perf_counter() - t0:.0f} s, EMA {curve[-1][1]:.2f} dB",
                  flush=True)
    best = max(curve, key=lambda c: c[1])
    return {"psnr": curve[-1][1], "best_psnr_oracle": best[1], "best_iteration": best[0],
            "seconds": time.perf_counter() - t0, "iterations": iterations, "curve": curve,
            "parameters": src_core.count_parameters(net)}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _row(record: dict, args) -> list:
    rl2d, rl3d = ({int(n): r for n, r in record[key].items()} for key in ("rl_2d", "rl_3d"))
    best2, best3 = record["rl_2d_best_oracle"], record["rl_3d_best_oracle"]
    alphas = [a for a in record["blend_alphas"] if a is not None]
    weights = f"{np.mean(alphas):.2f} ({min(alphas):.2f}-{max(alphas):.2f})" if alphas else "no blend"
    row = [f"{record['photons']:g}", f"{record['blurred_psnr']:.2f}", f"{rl2d[best2]['psnr']:.2f} ({best2} it)",
           f"{rl3d[30]['psnr']:.2f} ({rl3d[30]['seconds']:.1f} s)" if 30 in rl3d else "-",
           f"{rl3d[best3]['psnr']:.2f} ({best3} it, {rl3d[best3]['seconds']:.1f} s)",
           f"{record['dip_alone_psnr']:.2f}", weights,
           f"**{record['answer_psnr']:.2f}** ({record['dip_seconds']:.0f} s)"]
    if args.dip_3d:
        d3 = record["dip_3d"]
        row.append(f"{d3['psnr']:.2f} / {d3['best_psnr_oracle']:.2f} ({d3['seconds']:.0f} s)")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--sigma-xy", type=float, default=1.2, help="the in-focus plane's sigma in pixels")
    p.add_argument("--z-r", type=float, default=2.0, help="planes of defocus at which the sigma is x1.41")
    p.add_argument("--psf-planes", type=int, default=15)
    p.add_argument("--photons", type=float, nargs="+", default=[300.0, 20000.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rl-iterations", type=int, nargs="+", default=[5, 10, 20, 30, 50, 100, 200])
    p.add_argument("--iterations", type=int, default=600, help="DIP's count for the first slice "
                   "(the later ones start from their neighbour's weights with the cpu preset's third)")
    p.add_argument("--dip-3d", type=int, default=0, metavar="N",
                   help="also fit a 3D generator through the 3D blur for N iterations (0: not)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    src_core.speed.choose_threads(args.threads)
    psf = widefield_psf(args.psf_planes, args.sigma_xy, args.z_r)
    focus = src_core.Blur(psf).psf
    clean = phantom(args.depth, args.size, args.seed)
    rows, records = [], []
    same = {k: v for k, v in vars(args).items() if k not in ("out", "photons", "threads")}
    for photons in args.photons:
        kept = args.out / "levels" / f"{photons:g}.json"  # each level as it finishes; a rerun skips it
        if kept.exists() and json.loads(kept.read_text())["args"] == same:
            record = json.loads(kept.read_text())["record"]
            records.append(record)
            rows.append(_row(record, args))
            continue
        noisy = degrade(clean, psf, photons, args.seed)
        rl2d, rl3d = {}, {}
        for n in args.rl_iterations:
            out, s = timed(lambda: np.stack([richardson_lucy(plane[None], focus, n)[0] for plane in noisy]))
            rl2d[n] = {"psnr": psnr(out, clean), "seconds": s}
            out, s = timed(richardson_lucy_volume, noisy[:, None], psf, n)
            rl3d[n] = {"psnr": psnr(out[:, 0], clean), "seconds": s}
        best2, best3 = (max(rl, key=lambda n: rl[n]["psnr"]) for rl in (rl2d, rl3d))
        print(f"{photons:g} photons: Richardson-Lucy 2D {sum(r['seconds'] for r in rl2d.values()):.0f} s, "
              f"3D {sum(r['seconds'] for r in rl3d.values()):.0f} s", flush=True)
        result, dip_s = timed(src_core.restore, noisy, task="deconvolve", psf=psf, stack="z", reference=clean,
                              channel_axis=None, iterations=args.iterations)
        summaries = [h.summary for h in result.histories]
        dip_alone = volume_psnr_of_slices([s["psnr_dip"] for s in summaries])
        record = {"photons": photons, "blurred_psnr": psnr(noisy, clean), "rl_2d": rl2d, "rl_3d": rl3d,
                  "rl_2d_best_oracle": best2, "rl_3d_best_oracle": best3, "dip_alone_psnr": dip_alone,
                  "blend_alphas": [s["blend_alpha"] for s in summaries],
                  "answer_psnr": psnr(np.asarray(result.image), clean), "dip_seconds": dip_s,
                  "dip_iterations": [h.timings.get("iterations") for h in result.histories],
                  "dip_config": result.config.to_dict(), "dip_notes": result.notes}
        print(f"{photons:g} photons: DIP per slice {dip_s:.0f} s", flush=True)
        if args.dip_3d:
            record["dip_3d"] = dip_volume(noisy, psf, clean, args.dip_3d)
        record = json.loads(json.dumps(record, default=json_default))
        write_json(kept, {"args": same, "record": record})
        records.append(record)
        rows.append(_row(record, args))
        print(rows[-1], flush=True)
    command = command_line(__file__, argv)
    md = ["# Deconvolution of a z-stack (synthetic widefield): DIP per slice against 3D Richardson-Lucy", "",
          f"Phantom: {args.depth}x{args.size}x{args.size} voxels, beads and filaments on a dim background "
          f"(`phantom`, seed {args.seed}). PSF: {args.psf_planes} planes, in-focus sigma {args.sigma_xy} px, "
          f"widening as sqrt(1 + (d / {args.z_r:g})^2) with defocus d, equal light in every plane (a widefield "
          "microscope's out-of-focus haze). Poisson noise at the given photons for the phantom's brightest "
          "voxel. PSNR in dB over the volume against the ground truth.", "",
          md_table(["photons", "blurred input", "ORACLE: RL per slice (in-focus plane), best count",
                    "RL 3D, 30 it", "ORACLE: RL 3D, best count", "DIP alone (per slice)",
                    "weight of DIP: mean (range)", "**Ours: the answer**"]
                   + ([f"3D generator, {args.dip_3d} it: final / ORACLE best"] if args.dip_3d else []), rows), "",
          "- RL's best counts are chosen with the ground truth: RL's best case, which a user does not have. "
          "The answer needs none: `restore(noisy, task='deconvolve', psf=psf, stack='z', "
          f"iterations={args.iterations})` on a CPU (the `cpu` preset, EMA 0.99, 5% held-out pixels; later "
          "slices warm-started from their neighbour with a third of the iterations). Its classical partner "
          "is 3D RL at 30 iterations; each slice's blend weight is the one whose blurred image (in-focus plane) "
          "best fits that slice's held-out pixels (1: DIP alone).",
          "- *DIP alone* is the volume PSNR of the network's slices (their mean squared error), before the blend.",
          *(["- *3D generator* (`--dip-3d`): one skip network in 3D (benchmarks/volume.py's, the cpu preset's "
             "architecture with Conv3d) fitted through the whole 3D blur, the deconvolve task's CPU settings, "
             "its answer the EMA of outputs at the end (no held-out voxels here, so no early stop); *ORACLE best*: "
             "the best EMA on the way, picked with the ground truth."] if args.dip_3d else []),
          f"- Wall times on this machine, one process, {args.threads} threads.",
          f"- Command: `{command}`",
          f"- Machine: {src_core.speed.usable_cores()} usable cores; torch {__import__('torch').__version__}.", ""]
    write_text_atomic(args.out / "README.md", "\n".join(md))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(args.out / "deconvolution_3d.json",
               json.loads(json.dumps({"command": command, "args": settings, "records": records},
                                     default=json_default)))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
