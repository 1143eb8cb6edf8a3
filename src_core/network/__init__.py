"""The generators Deep Image Prior can fit, behind one interface (:class:`~.base.Generator`).

``NETWORKS`` names them; a run's ``network`` settings are one of their settings classes, and
``architecture=...`` (``--set architecture=decoder``) picks one.  A new generator is a module
here with its settings class, and one line in ``NETWORKS``.

>>> sorted(NETWORKS)
['decoder', 'skip']
>>> count_parameters(build_network(NetworkConfig(), output_channels=1))   # the paper's skip net
2217573
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import DIPError
from .base import Generator
from .decoder import DecoderConfig, DeepDecoder
from .skip import NetworkConfig, SkipNet

#: the generators by the name their settings are saved under; "skip" is the paper's
NETWORKS: dict[str, type[Generator]] = {"skip": NetworkConfig, "decoder": DecoderConfig}


def network_settings(architecture: str = "skip", **fields) -> Generator:
    """The settings of the generator ``architecture`` names, with ``fields`` set."""
    if not isinstance(architecture, str) or architecture not in NETWORKS:
        raise DIPError(f"architecture must be one of {tuple(NETWORKS)} (got {architecture!r}).")
    cls = NETWORKS[architecture]
    unknown = set(fields) - cls.field_names()
    if unknown:
        raise DIPError(f"unknown {architecture} network fields {sorted(map(str, unknown))}; "
                       f"its fields are {sorted(cls.field_names())}.")
    return cls(**fields)


def from_dict(data: dict) -> Generator:
    """Settings as saved (``architecture`` absent for the skip net)."""
    data = dict(data)
    return network_settings(data.pop("architecture", "skip"), **data)


def build_network(config: Generator | None = None, output_channels: int = 1,
                  memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """Build the generator ``config`` describes, for data in ``memory_format``."""
    config = (config or NetworkConfig()).validate()
    if output_channels < 1:
        raise DIPError(f"output_channels must be >= 1 (got {output_channels}).")
    return config.build(output_channels, memory_format)


def count_parameters(net: nn.Module) -> int:
    """The network's weights: what a checkpoint or a shared start weighs, in numbers."""
    return sum(p.numel() for p in net.parameters())


__all__ = ["NETWORKS", "DecoderConfig", "DeepDecoder", "Generator", "NetworkConfig", "SkipNet",
           "build_network", "count_parameters", "from_dict", "network_settings"]
