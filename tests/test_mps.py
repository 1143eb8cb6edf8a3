"""Apple's MPS, simulated (no Apple hardware here): what "auto" picks there, and the clear refusals
of what napari-dip has only measured elsewhere (docs/engine.md, "Apple Silicon")."""

import numpy as np
import pytest
import torch

import src_core
from src_core import DIPError, DIPRun, bernoulli_mask
from src_core.engine.spec import _kernels


@pytest.fixture
def mps_only(monkeypatch):
    """A machine whose torch reports MPS and no CUDA (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def test_auto_picks_mps_in_float32_contiguous_without_compile_or_graph(mps_only):
    assert "mps" in src_core.available_devices()
    device = src_core.resolve_device("auto")
    assert device.type == "mps"
    amp, memory_format, compile_mode, graph = _kernels(src_core.preset("cpu"), device)
    assert amp is None and memory_format == torch.contiguous_format and compile_mode is False and graph is False


def test_a_run_on_mps_is_checked_and_described_before_any_kernel(mps_only):
    img = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    run = DIPRun(img, bernoulli_mask((32, 32), 0.5), src_core.preset("cpu", scales=2, iterations=5))  # not started
    assert run.spec.device.type == "mps" and run.spec.amp_dtype is None
    assert run.spec.memory_format == torch.contiguous_format
    # with no count given, the default on MPS is the CPU's: the small preset, fitted to a time budget
    assert src_core.tasks.get_task("inpaint").default_preset("mps", {})[0] == "cpu"


@pytest.mark.parametrize("settings, message", [
    (dict(compile="graph"), "needs a CUDA device"),
    (dict(precision="bfloat16"), "runs float32 there"),
    (dict(precision="float16"), "runs float32 there"),
])
def test_what_needs_cuda_or_was_never_measured_on_mps_is_refused_clearly(mps_only, settings, message):
    img = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    with pytest.raises(DIPError, match=message):
        DIPRun(img, None, src_core.preset("cpu", scales=2, iterations=5, **settings))
