"""Pick a torch device by name, or the best one present, with a clear error if it is absent."""

from __future__ import annotations

import torch

from .errors import DIPError


def available_devices() -> list[str]:
    """The devices a run can name here: 'cpu', then 'cuda:N' and 'mps' where torch finds them."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' prefers CUDA, then MPS, then CPU; a named device must exist here."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if "mps" in available_devices():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise DIPError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from None
    present = available_devices()
    if device.type == "cuda":
        index = device.index or 0
        if f"cuda:{index}" not in present:
            raise DIPError(
                f"device {name!r} is not available here (devices present: {present}); "
                "use 'auto' or 'cpu'."
            )
    elif device.type == "mps" and "mps" not in present:
        raise DIPError(f"device 'mps' is not available here (devices present: {present}); use 'auto' or 'cpu'.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DIPError(f"device type {device.type!r} is not supported; use 'cpu', 'cuda' or 'mps'.")
    return device


def free_device_memory(device: torch.device) -> None:
    """Hand cached blocks back to the driver so other programs (or napari) can use them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
