"""The engine's loop follows the original code's trajectory step for step.

The original notebooks run: fixed input z plus fresh Gaussian noise each
step, the skip net, MSE between masked output and masked image, Adam.  A
plain loop written that way here and the engine, given the same seeds and
the same arithmetic (float32, NCHW, eager, one thread, guard off), must
give bit-identical losses and outputs.  The two sides share the machine,
so this holds on any CPU; it is what keeps refactors of the loop honest.
"""

import numpy as np
import pytest
import torch

from src_core import DIPRun, bernoulli_mask, build_network
from src_core.engine import make_input


def _plain_loop(image, mask, cfg):
    c, h, w = image.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build_network(cfg.network, output_channels=c)
    z = make_input(cfg.input_kind, cfg.network.input_channels, h, w, cfg.input_scale,
                   torch.Generator().manual_seed(cfg.seed))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    noise = torch.empty_like(z)
    m = torch.from_numpy(np.broadcast_to(mask, image.shape).astype(np.float32))[None]
    target = torch.from_numpy(image)[None] * m
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=True)
    losses = []
    for _ in range(cfg.iterations):
        optimizer.zero_grad(set_to_none=True)
        noise[0].normal_(generator=gen)
        out = net(torch.add(z, noise, alpha=cfg.sigma_p)).float()
        loss = ((out - target) * m).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses, dtype=np.float32), out.detach()[0].numpy()


@pytest.mark.parametrize("channels", [1, 3])
def test_engine_loss_trajectory_is_the_plain_loop_bit_for_bit(tiny, channels):
    rng = np.random.default_rng(3)
    image = rng.random((channels, 32, 32), dtype=np.float32)
    mask = bernoulli_mask((32, 32), 0.5, 2)[None]
    cfg = tiny(iterations=15, guard=False, precision="float32", memory_format="contiguous",
               compile="off", seed=4, sigma_p=0.03, lr=0.01)
    expected_losses, expected_out = _plain_loop(image, mask, cfg)
    fin = DIPRun(image, mask, cfg, threads=1).run()
    assert np.array_equal(np.asarray(fin.history.loss, dtype=np.float32), expected_losses)
    assert np.array_equal(fin.output, np.clip(expected_out, 0, 1))
