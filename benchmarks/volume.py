"""Volumes: one 3D skip network (Conv3d) against the engine's slice-by-slice restoration.

    python benchmarks/volume.py --threads 2 --out docs/results/volume

Issue 12, item 6: a Z-stack whose slices share structure may restore better
as one volume.  A seeded synthetic volume (soft blobs long in z, tubes that
cross the stack obliquely, hard-edged ellipsoids, a shaded background; values
in [0, 1]) loses ``--missing`` of its voxels at random, and is restored

* slice by slice: ``src_core.restore`` with the ``cpu`` preset at a fixed
  iteration count (its guard on, no early stop, observed voxels kept as the
  inpainting default; no held-out pixels and no classical blend, so both
  methods are the raw network prior);
* as one volume: the same skip architecture (the ``cpu`` preset's scales,
  widths, kernels, upsampling, input code, noise, learning rate, guard and
  iteration count) with Conv3d, BatchNorm3d and reflection padding, built
  here; downsampling halves Y and X at every scale, and Z too with
  ``--z-strides 2`` while the depth allows.

Biharmonic inpainting per slice and over the volume (scikit-image) is shown
as a reference.  PSNR against the truth over the missing voxels and over all
voxels (data_range 1); wall times in this process with ``--threads`` threads.
``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src_core  # noqa: E402
from src_core.plots import plot_panel  # noqa: E402
from src_core.reports import md_table, write_json, write_text_atomic  # noqa: E402
from _report import command_line  # noqa: E402


# ----------------------------------------------------------------------------- data

def synthetic_volume(depth: int, size: int, seed: int) -> np.ndarray:
    """(depth, size, size) in [0, 1]: structure every slice shares, drifting smoothly along z."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in (depth, size, size)), indexing="ij")
    s = size / 64  # feature sizes follow the slice size
    vol = 0.15 + 0.05 * np.sin(2 * np.pi * (rng.uniform(0.5, 1.5) * x / size + rng.uniform(0.5, 1.5) * y / size
                                            + 0.5 * z / depth))
    for _ in range(6):  # soft blobs, several slices deep
        cz, cy, cx = rng.uniform(0, 1, 3) * (depth, size, size)
        sz, sxy = rng.uniform(depth / 4, depth / 2), rng.uniform(3, 8) * s
        vol += rng.uniform(0.2, 0.5) * np.exp(-((z - cz) / sz) ** 2 / 2
                                              - ((y - cy) ** 2 + (x - cx) ** 2) / (2 * sxy ** 2))
    for _ in range(4):  # tubes crossing the stack: their section moves up to 2 px per slice
        y0, x0 = rng.uniform(0.2, 0.8, 2) * size
        dy, dx = rng.uniform(-2, 2, 2) * s
        r = rng.uniform(1, 2) * s
        vol += rng.uniform(0.3, 0.5) * np.exp(-((y - y0 - dy * (z - depth / 2)) ** 2
                                                 + (x - x0 - dx * (z - depth / 2)) ** 2) / (2 * r ** 2))
    for _ in range(3):  # hard-edged ellipsoids
        cz, cy, cx = rng.uniform(0.2, 0.8, 3) * (depth, size, size)
        az, ay, ax = rng.uniform(depth / 3, depth), *(rng.uniform(6, 14, 2) * s)
        inside = ((z - cz) / az) ** 2 + ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 <= 1
        vol = np.where(inside, vol + rng.uniform(0.3, 0.5), vol)
    vol = gaussian_filter(vol, (0, 0.5, 0.5))  # light in-plane anti-aliasing of the edges
    return (vol / vol.max()).astype(np.float32)


def psnr(estimate: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    d = np.clip(estimate, 0, 1).astype(np.float64) - truth
    mse = float(np.mean(d[where] ** 2 if where is not None else d ** 2))
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


# ----------------------------------------------------------------------------- the 3D network

class Pad3d(nn.Module):
    """Reflection padding of Z, Y and X; replicate where a side is too short to reflect."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        mode = "reflect" if min(x.shape[-3:]) > self.pad else "replicate"
        return F.pad(x, (self.pad,) * 6, mode=mode)


def unit3d(c_in: int, c_out: int, kernel: int, stride=(1, 1, 1)) -> nn.Sequential:
    """(pad) -> Conv3d -> BatchNorm3d (batch statistics, as the 2D net) -> LeakyReLU(0.2)."""
    layers = [Pad3d((kernel - 1) // 2)] if kernel > 1 else []
    return nn.Sequential(*layers, nn.Conv3d(c_in, c_out, kernel, stride),
                         nn.BatchNorm3d(c_out, track_running_stats=False), nn.LeakyReLU(0.2, inplace=True))


class Scale3d(nn.Module):
    """One level: skip branch; down branch (strided conv, conv, deeper levels, upsample); join."""

    def __init__(self, i: int, c_in: int, cfg: src_core.NetworkConfig, z_stride: int, deeper: nn.Module | None):
        super().__init__()
        n_d, n_u, n_s = cfg.down_channels[i], cfg.up_channels[i], cfg.skip_channels[i]
        self.skip = unit3d(c_in, n_s, cfg.skip_kernel[i]) if n_s else None
        self.down = nn.Sequential(unit3d(c_in, n_d, cfg.down_kernel[i], (z_stride, 2, 2)),
                                  unit3d(n_d, n_d, cfg.down_kernel[i]))
        self.deeper = deeper
        self.mode = {"nearest": "nearest", "bilinear": "trilinear"}[cfg.upsample[i]]
        k = cfg.up_channels[i + 1] if deeper is not None else n_d
        join = [nn.BatchNorm3d(n_s + k, track_running_stats=False), unit3d(n_s + k, n_u, cfg.up_kernel[i])]
        self.join = nn.Sequential(*join, *([unit3d(n_u, n_u, 1)] if cfg.conv_after_join else []))

    def forward(self, x):
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = F.interpolate(y, size=x.shape[-3:], mode=self.mode)
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.join(y)


class SkipNet3d(nn.Module):
    """The skip hourglass of ``src_core.network`` in 3D, for one (1, C_in, D, H, W) input."""

    def __init__(self, config: src_core.NetworkConfig, depth: int, z_stride: int = 1):
        super().__init__()
        cfg = config.validate()
        assert cfg.activation == "leaky_relu" and cfg.padding == "reflection" and set(cfg.downsample) == {"stride"}
        self.z_strides = []
        for _ in range(cfg.scales):  # halve Z while it stays even and at least 2 deep
            zs = z_stride if depth % z_stride == 0 and depth // z_stride >= 2 else 1
            self.z_strides.append(zs)
            depth //= zs
        deeper = None
        for i in reversed(range(cfg.scales)):
            c_in = cfg.input_channels if i == 0 else cfg.down_channels[i - 1]
            deeper = Scale3d(i, c_in, cfg, self.z_strides[i], deeper)
        self.body = deeper
        self.head = nn.Conv3d(cfg.up_channels[0], 1, 1, bias=cfg.bias)

    def forward(self, z):
        return torch.sigmoid(self.head(self.body(z)))


def restore_3d(observed: np.ndarray, mask: np.ndarray, cfg: src_core.RunConfig, z_stride: int,
               keep_observed: bool) -> dict:
    """The DIP loop of the engine (Adam, input noise, masked MSE, the guard) on one volume."""
    assert cfg.input_kind in ("uniform", "gaussian") and cfg.optimizer == "adam" and cfg.ema == 0
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    net = SkipNet3d(cfg.network, observed.shape[0], z_stride)
    z = torch.empty(1, cfg.network.input_channels, *observed.shape)
    gen = torch.Generator().manual_seed(cfg.seed)
    (z.uniform_ if cfg.input_kind == "uniform" else z.normal_)(generator=gen)
    z *= cfg.input_scale
    noise, noise_gen = torch.empty_like(z), torch.Generator().manual_seed(cfg.seed + 1)
    mask_t = torch.from_numpy(mask.astype(np.float32))[None, None]
    target = torch.from_numpy(observed)[None, None] * mask_t
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=True)
    fit_psnr = lambda loss: 10 * math.log10(mask.mean() / loss) if loss > 0 else math.inf  # noqa: E731
    best, good_out, recoveries = None, None, []
    saved = copy.deepcopy((net.state_dict(), opt.state_dict()))  # a fall at the first check: back to the start
    t_loop = time.perf_counter()
    for it in range(1, cfg.iterations + 1):
        noise.normal_(generator=noise_gen)
        out = net(z + cfg.sigma_p * noise)
        loss = ((out - target) * mask_t).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.guard and it == 1:
            best, good_out = fit_psnr(loss.item()), out.detach().clone()
        if cfg.guard and it % cfg.guard_every == 0:  # as the engine's guard: back to the last good check
            fit = fit_psnr(loss.item())
            if not math.isfinite(fit) or fit < best - cfg.guard_drop_db:
                recoveries.append(it)
                net.load_state_dict(saved[0])
                opt.load_state_dict(saved[1])
                out = good_out
                continue
            saved = copy.deepcopy((net.state_dict(), opt.state_dict()))
            best, good_out = max(best, fit), out.detach().clone()
        opt.step()
    final, last = out.detach(), fit_psnr(loss.item())
    if cfg.guard and (not math.isfinite(last) or last < best - cfg.guard_drop_db):
        final = good_out
    answer = np.clip(final[0, 0].numpy(), 0, 1)
    if keep_observed:
        answer = np.where(mask, observed, answer)
    return {"image": answer, "seconds": time.perf_counter() - t0, "optimise_s": time.perf_counter() - t_loop,
            "steps": cfg.iterations, "recoveries": recoveries, "z_strides": net.z_strides,
            "parameters": src_core.count_parameters(net)}


# ----------------------------------------------------------------------------- the comparison

def restore_2d(observed, mask, cfg, threads) -> dict:
    t0 = time.perf_counter()
    result = src_core.restore(observed, mask, task="inpaint", channel_axis=None, config=cfg, validate=0,
                              classical=None, threads=threads)
    seconds = time.perf_counter() - t0
    steps = sum(h.timings["iterations"] for h in result.histories)
    return {"image": np.asarray(result.image, np.float32), "seconds": seconds,
            "optimise_s": sum(h.timings["optimise_s"] for h in result.histories), "steps": steps,
            "recoveries": [r["iteration"] for h in result.histories for r in h.recoveries],
            "keep_observed": result.keep_observed, "fast_path": result.history.fast_path,
            "parameters": src_core.count_parameters(src_core.build_network(cfg.network))}


def biharmonic(observed, mask, per_slice: bool) -> dict:
    from skimage.restoration import inpaint_biharmonic

    t0 = time.perf_counter()
    image = (np.stack([inpaint_biharmonic(o, ~m) for o, m in zip(observed, mask)]) if per_slice
             else inpaint_biharmonic(observed, ~mask))
    return {"image": np.where(mask, observed, image).astype(np.float32), "seconds": time.perf_counter() - t0,
            "optimise_s": 0.0, "steps": 0, "recoveries": [], "parameters": 0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="write volume.json, README.md and volume.png here")
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--missing", type=float, default=0.5)
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std on the observed voxels")
    p.add_argument("--iterations", type=int, default=800, help="default: the cpu preset's")
    p.add_argument("--seeds", type=int, default=2, help="network seeds 0..N-1 (same for both methods)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--z-strides", type=int, nargs="+", default=[1, 2],
                   help="3D variants: Z stride of each down-sampling (1: in-plane only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke run: depth 4, size 32, 30 iterations, 1 seed")
    args = p.parse_args(argv)
    if args.quick:
        args.depth, args.size, args.iterations, args.seeds = 4, 32, 30, 1
    src_core.speed.choose_threads(args.threads)  # also torch.set_num_threads

    truth = synthetic_volume(args.depth, args.size, args.data_seed)
    rng = np.random.default_rng([args.data_seed, 1])
    mask = rng.random(truth.shape) >= args.missing  # True = observed
    observed = np.clip(truth + rng.normal(0, args.noise, truth.shape), 0, 1).astype(np.float32) * mask
    base = src_core.preset("cpu", iterations=args.iterations, early_stop=False)
    keep = src_core.get_task("inpaint").keep_observed

    methods = {"biharmonic, slice by slice": lambda s: biharmonic(observed, mask, True),
               "biharmonic, 3D": lambda s: biharmonic(observed, mask, False),
               "DIP 2D, slice by slice": lambda s: restore_2d(observed, mask, base.replace(seed=s), args.threads)}
    for zs in args.z_strides:
        methods[f"DIP 3D, z-stride {zs}"] = lambda s, zs=zs: restore_3d(observed, mask, base.replace(seed=s), zs, keep)
    runs, images = {name: [] for name in methods}, {}
    for seed in range(args.seeds):
        for name, run in methods.items():
            if name.startswith("biharmonic") and seed > 0:
                continue  # deterministic: once is enough
            r = run(seed)
            image = r.pop("image")
            images.setdefault(name, image)
            r.update(seed=seed, psnr_missing=psnr(image, truth, ~mask), psnr_all=psnr(image, truth),
                     s_per_step=r["optimise_s"] / r["steps"] if r["steps"] else None)
            runs[name].append(r)
            print(f"seed {seed}  {name:26s} {r['psnr_missing']:6.2f} dB missing {r['psnr_all']:6.2f} dB all "
                  f"{r['seconds']:8.1f} s", flush=True)

    def mean(name, key):
        values = [r[key] for r in runs[name] if r[key] is not None]
        return float(np.mean(values)) if values else None

    summary = {name: {k: mean(name, k) for k in ("psnr_missing", "psnr_all", "seconds", "s_per_step", "parameters")}
               for name in runs}
    rows = [[name, f"{s['psnr_missing']:.2f}", f"{s['psnr_all']:.2f}", f"{s['seconds']:.1f}",
             "-" if s["s_per_step"] is None else f"{s['s_per_step'] * 1000:.1f}", f"{s['parameters']:,.0f}",
             len(runs[name])] for name, s in summary.items()]
    command = command_line(__file__, argv)
    table = md_table(["Method", "PSNR missing voxels (dB)", "PSNR all voxels (dB)", "Wall time (s)",
                      "ms per network step", "Parameters", "Runs"], rows)
    print(table)
    if args.out is None:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    mid, row = args.depth // 2, args.size // 2
    stretch = max(1, args.size // (2 * args.depth))  # XZ sections: each slice drawn `stretch` rows tall
    shown = {"truth": truth, f"{args.missing:.0%} missing": observed,
             **{n: images[n] for n in images if n.startswith("DIP")}}
    titles = [n if n in ("truth", f"{args.missing:.0%} missing") else
              f"{n}: {psnr(images[n], truth, ~mask):.2f} dB" for n in shown]
    sections = [np.repeat(v[:, row], stretch, axis=0) for v in shown.values()]
    plot_panel([v[mid] for v in shown.values()] + sections,
               [f"{t}, z = {mid}" for t in titles] + [f"XZ at y = {row} (z x{stretch})" for _ in shown],
               args.out / "volume.png", columns=len(shown),
               suptitle="dB: PSNR of the whole volume's missing voxels (network seed 0)")
    two_d = summary["DIP 2D, slice by slice"]
    md = ["# Volumes: a 3D skip network against slice-by-slice DIP", "",
          f"Synthetic volume {args.depth}x{args.size}x{args.size} (Z, Y, X; data seed {args.data_seed}): soft "
          "blobs several slices deep, tubes crossing the stack obliquely, hard-edged ellipsoids, a shaded "
          f"background. {args.missing:.0%} of the voxels missing at random"
          f"{f', Gaussian noise {args.noise:g} on the rest' if args.noise else ''}. Both DIP methods: the "
          f"`cpu` preset's network, input code, noise, learning rate and guard, {args.iterations} iterations "
          "(no early stop), observed voxels kept, no validation or classical blend; network seeds "
          f"0..{args.seeds - 1}, means over seeds. The 3D network is the same skip architecture with Conv3d "
          "(3x3x3 kernels) and BatchNorm3d, downsampling Y and X at every scale and Z by the stated stride "
          "while the depth allows (strides per scale in volume.json); 2D runs one network per slice.", "",
          "![volume](volume.png)", "", table, "",
          *[f"- {n}: {s['psnr_missing'] - two_d['psnr_missing']:+.2f} dB on the missing voxels against 2D, at "
            f"{s['seconds'] / two_d['seconds']:.2f}x its wall time."
            for n, s in summary.items() if n.startswith("DIP 3D")],
          "- A network step: 2D, one slice; 3D, the whole volume (2D takes depth x iterations steps).",
          f"- Wall times in one process, {args.threads} thread(s), {src_core.speed.usable_cores()} usable cores, "
          f"torch {torch.__version__}; the 2D fast path: {runs['DIP 2D, slice by slice'][0]['fast_path']}.",
          f"- Command: `{command}`", ""]
    write_text_atomic(args.out / "README.md", "\n".join(md))
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(args.out / "volume.json", {"command": command, "args": arguments, "config": base.to_dict(),
                                          "keep_observed": keep, "summary": summary, "runs": runs})
    print(f"wrote {args.out}/README.md, volume.json, volume.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
