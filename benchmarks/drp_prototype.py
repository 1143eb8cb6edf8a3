"""Prototype: Deep-Random-Projector-style fitting (frozen random convolutions; the input code and
the BatchNorm layers fitted) on a time_to_quality case, one thread: PSNR against CPU s.

    python benchmarks/drp_prototype.py brick-random 0.05 drp 0 > curve.json   # case, lr, drp|weights, TV weight
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
torch.set_num_threads(1)
import src_core  # noqa: E402
from time_to_quality import build_case, psnr  # noqa: E402

def run(name, lr, iters=800, fit="drp", tv=0.0, seed=0, every=25):
    clean, observed = build_case(name)
    t0 = time.process_time()
    cfg = src_core.preset("cpu")
    torch.manual_seed(seed)
    net = src_core.build_network(cfg.network, 1)
    z = (torch.rand(1, cfg.network.input_channels, 128, 128, generator=torch.Generator().manual_seed(seed)) * 0.1)
    params = []
    if fit == "drp":
        for m in net.modules():
            for p in m.parameters(recurse=False):
                p.requires_grad_(isinstance(m, torch.nn.BatchNorm2d))
                if isinstance(m, torch.nn.BatchNorm2d):
                    params.append(p)
        z.requires_grad_(True)
        params.append(z)
    else:
        params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    target = torch.from_numpy(clean * observed)[None, None]
    mask = torch.from_numpy(observed.astype(np.float32))[None, None]
    pts = []
    for it in range(1, iters + 1):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(z)
        out = out.float()
        loss = ((out - target) ** 2 * mask).sum() / mask.sum()
        if tv:
            loss = loss + tv * ((out[..., 1:, :] - out[..., :-1, :]).abs().mean()
                                + (out[..., 1:] - out[..., :-1]).abs().mean())
        loss.backward()
        opt.step()
        if it % every == 0:
            o = out.detach()[0, 0].numpy()
            pts.append([it, time.process_time() - t0, psnr(np.where(observed, clean, o), clean)])
    return pts

if __name__ == "__main__":
    name, lr, fit, tv = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    iters = int(sys.argv[5]) if len(sys.argv) > 5 else 800
    print(json.dumps(run(name, lr, iters, fit, tv)))
