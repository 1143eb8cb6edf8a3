"""The network members of a run (K independent generators behind one call) and their input."""

from __future__ import annotations

import copy
import threading

import torch

from ..config import RunConfig
from ..errors import DIPError
from ..network import build_network


def make_input(kind: str, channels: int, height: int, width: int, scale: float,
               generator: torch.Generator) -> torch.Tensor:
    """The fixed network input z, (1, channels, H, W) on the CPU."""
    if kind == "meshgrid":
        ys = torch.linspace(0, 1, height)
        xs = torch.linspace(0, 1, width)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy])[None].float()
    z = torch.empty(1, channels, height, width)
    if kind == "uniform":
        z.uniform_(generator=generator)
    else:
        z.normal_(generator=generator)
    return z * scale


#: torch's CPU generator is one for the process: a network is initialised from it (seeded, then
#: put back), so two runs building theirs at once in two threads (a widget run beside the panel's
#: timing calibration, Dask's threads) would draw each other's numbers: one at a time
_GLOBAL_RNG = threading.Lock()


class Members:
    """K independent generators (the networks ``config.network`` names) behind one call.

    K = 1 is a plain module call.  K > 1 stacks the networks' weights
    (torch.func.stack_module_state), so one optimiser and one guard serve
    them all, and runs them either as one vmapped call (grouped
    convolutions: one pass, for GPUs) or member by member within the step
    ("loop": on the CPU, where oneDNN's grouped convolutions measured 0.39x
    the throughput of separate runs).  Each network is built with its own
    seed exactly as a single run would be, so K members reproduce K runs.
    """

    def __init__(self, config: RunConfig, channels: int, seeds: list[int], device, memory_format,
                 strategy: str = "vmap"):
        nets = []
        for seed in seeds:
            with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                nets.append(build_network(config.network, output_channels=channels, memory_format=memory_format))
        self.count = len(nets)
        if self.count == 1:
            self.module = nets[0].to(device=device, memory_format=memory_format)
            self.params = list(self.module.parameters())
            self.buffers = None
        else:
            from torch.func import stack_module_state

            params, buffers = stack_module_state([n.to(device) for n in nets])
            self.names = list(params)
            self.params = [params[n] for n in self.names]
            self.buffers = buffers
            self.module = copy.deepcopy(nets[0]).to("meta" if strategy == "vmap" else device)
        if self.count == 1:
            self.forward = self._forward_single
        else:
            self.forward = self._forward_vmap if strategy == "vmap" else self._forward_loop

    def _forward_single(self, z):
        return self.module(z)

    def _forward_vmap(self, z):
        from torch.func import functional_call, vmap

        def one(params, buffers, x):
            return functional_call(self.module, (params, buffers), (x[None],))[0]

        params = dict(zip(self.names, self.params))
        return vmap(one)(params, self.buffers, z)

    def _forward_loop(self, z):
        from torch.func import functional_call

        outs = []
        for k in range(self.count):
            params = {n: p[k] for n, p in zip(self.names, self.params)}
            buffers = {n: b[k] for n, b in self.buffers.items()}
            outs.append(functional_call(self.module, (params, buffers), (z[k:k + 1],)))
        return torch.cat(outs)

    def start_from(self, weights: dict) -> None:
        """A one-member run starts from another run's final weights (a warm start)."""
        try:
            with torch.no_grad():
                self.module.load_state_dict(weights)
        except (RuntimeError, KeyError) as exc:
            raise DIPError(f"the start weights are not of this run's network ({str(exc)[:200]}); a warm "
                           "start needs the same network settings.") from None

    def named_buffers(self) -> dict:
        """The BatchNorm buffers by name (stacked over members when there are several)."""
        return dict(self.module.named_buffers()) if self.count == 1 else dict(self.buffers or {})

    def member_params(self, k: int) -> list[torch.Tensor]:
        return self.params if self.count == 1 else [p[k] for p in self.params]
