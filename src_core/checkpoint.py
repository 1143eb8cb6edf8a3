"""Checkpoints: a long run saves its whole state now and then, so a crash or a kill loses minutes.

A checkpoint holds everything the next iteration depends on: the weights and
BatchNorm buffers, Adam's state, the input-noise generators, the loss log, the
running average, the early-stopping and validation state, the guard's last good
state and the history so far.  A resumed run therefore follows the same
trajectory as one that was never interrupted (same device, same threads).  It
is saved at report iterations only (when the loop synchronises anyway), at most
every ``every_s`` seconds, atomically (a kill during the save leaves the
previous checkpoint), and refused on resume when it belongs to another problem
(its fingerprint covers the images, masks, configuration and seeds).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from .errors import DIPError
from .io import atomic_path

FORMAT = 1


def fingerprint(*parts) -> str:
    """sha256 over arrays (bytes, shape, dtype) and anything else by its repr."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (list, tuple)):
            h.update(fingerprint(*part).encode())
        elif part is None:
            h.update(b"None")
        elif getattr(part, "read_by_slice", False):  # a lazy stack: one slice at a time, same digest
            h.update(f"{part.shape}{part.dtype}".encode())
            for index in range(len(part)):
                h.update(np.ascontiguousarray(part[index]).tobytes())
        elif isinstance(part, np.ndarray) or hasattr(part, "__array__"):
            a = np.ascontiguousarray(part)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


class Checkpoint:
    """Where a run keeps its state, and how often (``every_s`` seconds at most)."""

    def __init__(self, path, every_s: float = 300.0):
        if not isinstance(every_s, (int, float)) or isinstance(every_s, bool) or not every_s >= 0:
            raise DIPError(f"checkpoint interval must be >= 0 seconds (got {every_s!r}).")
        self.path = Path(path)
        self.every_s = float(every_s)
        self.last = time.monotonic()

    def exists(self) -> bool:
        return self.path.is_file()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"format": FORMAT, **state}, tmp)
        self.last = time.monotonic()

    def load(self, expected_fingerprint: str, config: dict | None = None) -> dict:
        """The saved state, if it was made by this problem (``config``: this run's settings, to
        name the ones that differ when it was not)."""
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise DIPError(f"cannot read the checkpoint {self.path} ({str(exc)[:120]}); delete it to "
                           "start the run again.") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise DIPError(f"{self.path} is not a napari-dip checkpoint of this version; delete it "
                           "to start again.")
        if state.get("fingerprint") != expected_fingerprint:
            histories = state.get("histories") or [{}]
            differ = _differences(histories[0].get("config"), config) if config is not None else []
            which = (f"settings that differ: {', '.join(differ[:6])}" if differ
                     else "the same settings, another image, mask or seed")
            raise DIPError(f"the checkpoint {self.path} belongs to another run ({which}); delete it, or "
                           "resume with the settings it was made with.")
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _differences(saved: dict | None, current: dict, prefix: str = "") -> list[str]:
    """'lr 0.01 -> 0.02' for each setting (nested ones dotted) that differs between two configs."""
    if not isinstance(saved, dict):
        return []
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out
