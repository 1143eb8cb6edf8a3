import os
import tempfile

import numpy as np
import pytest
import torch

# Calibrations of this machine's speed (src_core.timing) go to a folder of this session's, never
# the user's cache, and none from an earlier session decides an estimate here.
os.environ["DIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="dip-test-cache-")

from src_core import preset, speed

# The tests use tiny networks, for which extra threads only add overhead, and
# oversubscribed OpenMP threads slow to a crawl when the machine is busy.
torch.set_num_threads(1)
speed.choose_threads(1)  # runs default to the free cores; keep the tests at one


def tiny_config(**overrides):
    """A 2-scale, 8-channel network: a run of a few dozen steps takes well under a second."""
    settings = dict(scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=20,
                    report_every=5, device="cpu")
    settings.update(overrides)
    return preset("cpu", **settings)


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture
def small_image():
    """A smooth 32x32 test image in [0, 1] with some structure."""
    y, x = np.mgrid[0:32, 0:32] / 31.0
    return (0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y)).astype(np.float32)


@pytest.fixture
def failing_part(monkeypatch):
    """Make the slice or tile ``failing_part.index`` fail (while ``failing_part.fail``), as out of
    memory would; ``failing_part.ran`` lists the parts that started, in order."""
    import src_core.parts

    real = src_core.parts._solve_here

    def solve(part, index, *args):
        solve.ran.append(index)
        if index == solve.index and solve.fail:
            raise RuntimeError("out of memory (simulated)")
        return real(part, index, *args)

    solve.ran, solve.index, solve.fail = [], None, True
    monkeypatch.setattr(src_core.parts, "_solve_here", solve)
    return solve
