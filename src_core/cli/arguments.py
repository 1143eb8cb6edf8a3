"""The parsed flags as the engine's values: settings overrides, threads, the channel axis, tiles and
task options (each refusal a :class:`src_core.errors.DIPError` in the flag's name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import parse_settings
from ..errors import DIPError


def _overrides(args) -> dict:
    out = parse_settings(args.set)
    for name in ("iterations", "lr", "seed", "device", "report_every", "sigma_p", "optimizer", "fidelity",
                 "photon_gain", "photon_offset", "restarts"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if getattr(args, "early_stop", False):
        out["early_stop"] = True
    if getattr(args, "no_guard", False):
        out["guard"] = False
    return out


def set_threads(args) -> None:
    """--threads, for every command that has it: the default of every run of this process."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise DIPError(f"--threads must be >= 1 (got {threads}).")
        from ..speed import choose_threads

        choose_threads(threads)


def _channel_axis(text):
    if text in (None, "auto"):
        return "auto"
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise DIPError(f"--channel-axis takes 'auto', 'none' or an axis number (got {text!r}).") from None


def _check_tiling(args) -> None:
    if args.overlap is not None and args.tile is None:
        raise DIPError("--overlap is how much neighbouring tiles share: it needs --tile.")


def _whole_number(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DIPError(f"{name} takes a whole number of pixels or 'auto' (got {text!r}).") from None


def _tile_side(text: str):
    """--tile as the engine takes it: 'auto', or the side in pixels (a task and ``dip batch`` alike)."""
    return text if text == "auto" else _whole_number(text, "--tile")


def _option_value(option, value):
    """A task option from the command line: numbers as numbers, anything else an image file."""
    if option.kind is int or not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        if not option.image:
            raise DIPError(f"--{option.name.replace('_', '-')} takes a number (got {value!r}).") from None
        from ..io import read_image

        return read_image(Path(value)).astype(np.float64)
