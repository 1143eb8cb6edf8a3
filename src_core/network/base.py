"""What the engine asks of a generator: the interface every network's settings implement.

A generator is described by a dataclass of its own settings (a :class:`Generator`).  The
loop, the memory model, tiles and the widget ask it the same few questions, so none of
them knows which network it is:

* :meth:`Generator.multiple`: the padded grid's sides are a multiple of this;
* :meth:`Generator.min_size` and :meth:`Generator.size_problem`: the smallest side it takes;
* :meth:`Generator.context`: the pixels around a hole it mixes (tiles, healing);
* :meth:`Generator.input_shape`: the fixed code z it reads for an output grid;
* :meth:`Generator.build`: the module; its cost and memory come from a shape-only pass
  over it (:func:`src_core.speed.network_cost`);
* :meth:`Generator.width` and :meth:`Generator.with_width` / :meth:`Generator.with_scales`:
  the two knobs every generator has (channels per layer, depth), which the widget shows.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, fields

from torch import nn

from ..errors import DIPError


class Generator:
    """A generator's settings (subclasses are dataclasses with ``scales`` and
    ``input_channels`` fields) and the questions the engine asks it."""

    #: its name in :data:`src_core.NETWORKS` and in saved settings (``architecture``)
    architecture = ""
    # fields every generator's dataclass has (declared here for the engine's questions below)
    scales: int
    input_channels: int

    def validate(self) -> "Generator":
        """A checked copy with every per-layer field expanded, or a DIPError."""
        raise NotImplementedError

    def build(self, output_channels: int, memory_format=None) -> nn.Module:
        raise NotImplementedError

    def multiple(self) -> int:
        """The output grid's sides are a multiple of this (one pixel at the coarsest scale)."""
        return 2 ** self.validate().scales

    def min_size(self) -> int:
        return self.multiple()

    def context(self) -> int:
        """Pixels of known image to keep around a hole when restoring only its surroundings:
        two cells of the coarsest scale, the width over which that scale mixes pixels."""
        return 2 * self.multiple()

    def input_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, H, W) of the code z for an output grid of ``height`` x ``width``."""
        return self.input_channels, height, width

    def width(self) -> int:
        """The channels of its widest layer."""
        raise NotImplementedError

    def with_width(self, channels: int) -> "Generator":
        """A copy with ``channels`` at every layer."""
        raise NotImplementedError

    def with_scales(self, scales: int) -> "Generator":
        out = copy.deepcopy(self)
        out.scales = scales
        return out

    def to_dict(self) -> dict:
        """The settings as saved: ``architecture`` only when it is not the default skip net,
        so settings saved before there were other generators are unchanged."""
        data = asdict(self)
        if self.architecture != "skip":
            data = {"architecture": self.architecture, **data}
        return data

    def size_problem(self, height: int, width: int) -> str | None:
        """Why an image of this size cannot go through the network (None if it can), with advice."""
        need = self.min_size()
        if min(height, width) >= need:
            return None
        fits = [s for s in range(self.scales - 1, 0, -1) if min(height, width) >= self.with_scales(s).min_size()]
        advice = (f"use at most {fits[0]} scales (scales={fits[0]})" if fits else
                  "it is too small for any network of this kind; give a larger image")
        return (f"an image of {height}x{width} pixels is too small for a {self.scales}-scale network "
                f"(it needs at least {need} pixels per side): {advice}.")

    def check_fits(self, height: int, width: int) -> None:
        problem = self.size_problem(height, width)
        if problem:
            raise DIPError(problem)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


# ------------------------------------------------------------------ checks the generators share

#: bounds far beyond any useful network, so that a typo fails here and not in torch
MAX_SCALES = 12
MAX_CHANNELS = 4096
MAX_KERNEL = 31


def not_whole(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def whole_in(name, value, low, high, shown=None) -> None:
    if not_whole(value) or not low <= value <= high:
        raise DIPError(f"{name} must be whole numbers from {low} to {high} "
                       f"(got {value if shown is None else shown!r}).")


def per_scale(value, scales: int, name: str) -> list:
    """Expand a scalar to one value per scale; check a list has one per scale."""
    if isinstance(value, (list, tuple)):
        if len(value) != scales:
            raise DIPError(
                f"{name} has {len(value)} entries but the network has {scales} scales; "
                f"give one value per scale or a single number for all."
            )
        return list(value)
    return [value] * scales


def check_choice(name: str, value, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise DIPError(f"{name} must be one of {tuple(allowed)} (got {value!r}).")


def check_flags(config, names) -> None:
    for name in names:
        if not isinstance(getattr(config, name), bool):
            raise DIPError(f"{name} must be true or false (got {getattr(config, name)!r}).")
