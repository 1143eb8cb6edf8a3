"""Z-stacks: the classical answer over the volume (3D, with the voxel spacing) against per slice.

    python benchmarks/zstack.py --threads 2 --out docs/results/zstack

Issue 31, item 1. The seeded synthetic volume of ``benchmarks/volume.py`` (soft blobs long in
z, tubes crossing the stack obliquely, hard-edged ellipsoids) is sampled two ways:

* isotropic: 16 planes of 64x64, voxel spacing (1, 1, 1);
* anisotropic: every 3rd plane of a 48-plane volume (16 planes, spacing (3, 1, 1)), as a
  widefield stack with 3x the pixel size between planes.

Inpainting (50% of the voxels missing at random, and a 6x6-pixel hole in every 12x12 cell of
each plane, a quarter of its area): biharmonic per slice (scikit-image), over the volume at unit spacing, and over the
volume with the true spacing (``src_core.classical.biharmonic_volume``). Denoising (Gaussian
noise, sigma 0.1): non-local means per slice and with 3D patches. Then the whole pipeline:
``src_core.restore`` per slice (the ``cpu`` preset, ``--iterations`` each, 5% held out, the
blend) with ``stack=None`` (the per-slice partner) and ``stack="z"`` with the spacing (the 3D
partner, the spacing or the voxel grid as the held-out voxels choose): DIP is the same in both,
only the partner and so the blend differ. PSNR over the missing voxels (the classical tables) or
all voxels (denoising, and the whole answer, as ``history.summary`` reports it), data range 1;
times in this process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src_core  # noqa: E402
from src_core.classical import biharmonic, biharmonic_volume, fill_from_neighbours, nlm_denoise  # noqa: E402
from src_core.reports import md_table  # noqa: E402
from _report import command_line, write_report  # noqa: E402
from volume import synthetic_volume  # noqa: E402


def nlm_denoise_volume(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Non-local means over a (Z, C, Y, X) volume with 3D patches (as the engine's
    ``nlm_denoise``: patch 5, distance 6, h = 0.8 sigma, sigma estimated from the whole volume);
    scikit-image takes no voxel spacing here. It measured below per-slice NLM here, so the
    engine keeps NLM per slice and this lives only in this benchmark."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    volume = np.asarray(volume, dtype=np.float32)
    if mask is not None:
        volume = np.stack([fill_from_neighbours(v, m) for v, m in zip(volume, np.broadcast_to(mask, volume.shape))])
    zyxc = np.moveaxis(volume, 1, -1)
    sigma = float(np.mean(estimate_sigma(zyxc, channel_axis=-1)))
    out = denoise_nl_means(zyxc, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
                           channel_axis=-1)
    return np.clip(np.moveaxis(out.reshape(zyxc.shape), -1, 1), 0.0, 1.0).astype(np.float32)


def psnr(estimate, truth, where=None) -> float:
    d = np.clip(estimate, 0, 1).astype(np.float64) - truth
    mse = np.mean((d if where is None else d[where]) ** 2)
    return float(10 * np.log10(1 / mse))


def volumes(size: int, depth: int, seed: int) -> dict:
    """(Z, 1, Y, X) volumes in [0, 1] with their spacing."""
    iso = synthetic_volume(depth, size, seed)
    aniso = synthetic_volume(3 * depth, size, seed + 1)[1::3]
    return {"isotropic": (iso[:, None], (1.0, 1.0, 1.0)), "anisotropic (dz = 3 dx)": (aniso[:, None], (3.0, 1.0, 1.0))}


def masks(shape, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    random = rng.random(shape) >= 0.5
    holes = np.ones(shape, bool)
    z, _, h, w = shape
    for k in range(z):
        for y in range(0, h - 6, 12):
            for x in range(0, w - 6, 12):
                oy, ox = rng.integers(0, 7, 2)  # one 6x6 hole in each 12x12 cell: a quarter of the area
                holes[k, :, y + oy:y + oy + 6, x + ox:x + ox + 6] = False
    return {"50% random": random, "6x6 holes": holes}


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def classical_rows(vols, seed: int) -> tuple[list, list]:
    rows, record = [], []
    for vname, (truth, spacing) in vols.items():
        for mname, known in masks(truth.shape, seed).items():
            obs = np.where(known, truth, 0).astype(np.float32)
            missing = ~known
            per_slice, t2 = timed(lambda: np.stack([biharmonic(o, k) for o, k in zip(obs, known)]))
            unit, t3 = timed(biharmonic_volume, obs, known)
            spaced, t4 = timed(biharmonic_volume, obs, known, spacing)
            r = {"volume": vname, "mask": mname, "per_slice": psnr(per_slice, truth, missing), "per_slice_s": t2,
                 "volume_unit": psnr(unit, truth, missing), "volume_unit_s": t3,
                 "volume_spaced": psnr(spaced, truth, missing), "volume_spaced_s": t4}
            record.append(r)
            best = max(r["per_slice"], r["volume_unit"], r["volume_spaced"])

            def cell(value, seconds, best=best):
                return f"**{value:.2f}** ({seconds:.1f} s)" if value == best else f"{value:.2f} ({seconds:.1f} s)"

            gain = max(r["volume_unit"], r["volume_spaced"]) - r["per_slice"]
            rows.append([vname, f"inpaint, {mname}", cell(r["per_slice"], t2), cell(r["volume_unit"], t3),
                         cell(r["volume_spaced"], t4), f"{gain:+.2f}"])
        noisy = np.clip(truth + np.random.default_rng(seed).normal(0, 0.1, truth.shape), 0, 1).astype(np.float32)
        per_slice, t2 = timed(lambda: np.stack([nlm_denoise(n) for n in noisy]))
        vol3d, t3 = timed(nlm_denoise_volume, noisy)
        r = {"volume": vname, "mask": "denoise sigma 0.1", "per_slice": psnr(per_slice, truth), "per_slice_s": t2,
             "volume_unit": psnr(vol3d, truth), "volume_unit_s": t3}
        record.append(r)
        bold = ("**", "") if r["per_slice"] >= r["volume_unit"] else ("", "**")
        rows.append([vname, "denoise, sigma 0.1 (NLM)", f"{bold[0]}{r['per_slice']:.2f}{bold[0]} ({t2:.1f} s)",
                     f"{bold[1]}{r['volume_unit']:.2f}{bold[1]} ({t3:.1f} s)", "(NLM takes no spacing)",
                     f"{r['volume_unit'] - r['per_slice']:+.2f}"])
    return rows, record


def pipeline_rows(vols, seed: int, iterations: int, threads: int) -> tuple[list, list]:
    rows, record = [], []
    for vname, (truth, spacing) in vols.items():
        known = masks(truth.shape, seed)["50% random"]
        image = (truth[:, 0] * 65535).astype(np.uint16)
        out = {}
        for label, kw in (("per slice", {}), ("3D", {"stack": "z", "spacing": spacing})):
            t0 = time.perf_counter()
            result = src_core.restore(image, known[:, 0], task="inpaint", reference=image, preset="cpu",
                                      iterations=iterations, threads=threads, **kw)
            seconds = time.perf_counter() - t0
            s = [h.summary for h in result.histories]
            chosen = [n for n in result.notes if n.startswith("classical 3D:")]
            out[label] = {key: float(np.mean([x[f"psnr_{key}"] for x in s])) for key in ("answer", "classical", "dip")}
            out[label].update(alpha=float(np.mean([np.nan if x["blend_alpha"] is None else x["blend_alpha"]
                                                   for x in s])), seconds=seconds, chosen=chosen)
        record.append({"volume": vname, **out})
        a, b = out["per slice"], out["3D"]
        rows.append([vname, f"{a['dip']:.2f}", f"{a['classical']:.2f}", f"{a['answer']:.2f} (α {a['alpha']:.2f})",
                     f"{b['classical']:.2f}", f"**{b['answer']:.2f}** (α {b['alpha']:.2f})",
                     f"{b['answer'] - a['answer']:+.2f}", f"{a['seconds']:.0f} / {b['seconds']:.0f} s"])
    return rows, record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/results/zstack"))
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.depth, args.iterations = 32, 6, 4
    vols = volumes(args.size, args.depth, args.seed)
    crow, crec = classical_rows(vols, args.seed)
    prow, prec = pipeline_rows(vols, args.seed, args.iterations, args.threads)
    lines = ["# Z-stacks: the classical answer in 3D against per slice", "",
             f"`{command_line(__file__, argv)}`", "",
             f"Synthetic volume of `benchmarks/volume.py`, {args.depth} planes of {args.size}x{args.size}; "
             f"{args.threads} threads. PSNR in dB over the missing voxels "
             "(inpainting) or all voxels (denoising), with the seconds each took.", "",
             "## Classical answers", "",
             md_table(["volume", "task", "per slice", "3D, the voxel grid", "3D, the volume's spacing",
                       "best 3D − per slice"], crow), "",
             f"## The whole answer (DIP per slice, `cpu` preset, {args.iterations} iterations, blended by "
             "held-out pixels with its partner), 50% random", "",
             md_table(["volume", "DIP alone", "per-slice partner", "answer", "3D partner", "answer", "gain",
                       "time (per slice / 3D)"], prow), "",
             "PSNR over all voxels, observed ones kept (`history.summary`); the 3D runs' choice of spacing: "
             + "; ".join(f"{r['volume']}: {' '.join(r['3D']['chosen']) or 'the voxel grid (nothing to choose)'}"
                         for r in prec), ""]
    write_report(args.out, "zstack", lines, {"command": command_line(__file__, argv), "classical": crec,
                                             "pipeline": prec, "args": vars(args) | {"out": str(args.out)}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
