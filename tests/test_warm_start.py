"""Warm starts: a stack's later slices start from the slice before's weights (RunConfig.warm_start)."""

import numpy as np
import pytest

import src_core
from src_core import DIPError, DIPRun

SMALL = dict(task="random", preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2,
             iterations=40, report_every=10, device="cpu", threads=1, classical=None)


def drifting(slices=3, size=48):
    y, x = np.mgrid[0:size, 0:size] / size
    return np.stack([(0.5 + 0.3 * np.sin(6 * (x + 0.02 * k)) * np.cos(4 * y)).astype(np.float32)
                     for k in range(slices)])


def test_later_slices_start_from_the_last_ones_weights_and_run_their_share():
    frames = drifting()
    cold = src_core.restore(frames, warm_start=0, **SMALL)
    warm = src_core.restore(frames, warm_start=0.25, **SMALL)
    assert [h.config["iterations"] for h in warm.histories] == [40, 10, 10]
    assert warm.histories[0].psnr == cold.histories[0].psnr          # the first slice is the cold run
    for k in (1, 2):
        # at its first report (10 iterations) a warm slice is far past where a cold one is then
        assert warm.histories[k].psnr[0] > cold.histories[k].psnr[0] + 3
    assert "warm_start" not in cold.histories[0].config and warm.histories[1].config["warm_start"] == 0.25


def test_the_cpu_default_warm_starts_a_stack_but_not_tiles_and_its_estimate_counts_that(monkeypatch):
    import src_core.tiled

    frames = drifting()
    problem = src_core.prepare(frames, **SMALL)
    assert problem.config.warm_start == pytest.approx(1 / 3)
    assert problem.estimate(measure=False).iterations == 40 + 2 * 13
    result = src_core.restore_problem(problem, frames)
    assert [h.config["iterations"] for h in result.histories] == [40, 13, 13]
    starts = []
    real = src_core.tiled.solve_parts

    def recording(parts, **kwargs):
        starts.append(kwargs.get("warm", False))
        yield from real(parts, **kwargs)

    monkeypatch.setattr(src_core.tiled, "solve_parts", recording)
    tiled = src_core.restore_tiled(frames[0], tile=32, overlap=8, **{**SMALL, "task": "denoise"})
    assert starts == [False] and all(h.config["iterations"] == 40 for h in tiled.histories)


def test_a_resumed_stack_warm_starts_from_the_kept_slice(tmp_path):
    """The store keeps a finished slice's weights: a stack stopped after slice 0 and run again
    starts slice 1 from them, as the uninterrupted run did."""
    import threading

    frames = drifting()
    whole = src_core.restore(frames, warm_start=0.25, **SMALL)
    stop = threading.Event()

    def stop_after_first(event, index):
        if index == 0 and event.kind == "finished":
            stop.set()

    partial = src_core.restore(frames, warm_start=0.25, stop=stop, callback=stop_after_first,
                               checkpoint_dir=tmp_path, **SMALL)
    assert partial.stopped and len(partial.histories) == 1
    resumed = src_core.restore(frames, warm_start=0.25, checkpoint_dir=tmp_path, **SMALL)
    assert [h.psnr for h in resumed.histories] == [h.psnr for h in whole.histories]


def test_start_weights_of_another_network_are_refused_clearly():
    image = drifting(1)[0][None]
    cfg = src_core.preset("cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2, iterations=4,
                          report_every=2, device="cpu")
    finished = DIPRun(image, config=cfg, threads=1).run()
    assert set(finished.weights) == set(src_core.build_network(cfg.network, 1).state_dict())
    wider = cfg.replace(**{"network.down_channels": 16, "network.up_channels": 16})
    with pytest.raises(DIPError, match="same network settings"):
        DIPRun(image, config=wider, threads=1, start=finished.weights).run()
    with pytest.raises(DIPError, match="warm_start"):
        src_core.preset("cpu", warm_start=1.5)


def test_a_warm_slice_whose_fit_diverges_from_its_neighbours_weights_runs_again_cold(monkeypatch):
    """A fit that falls at every check from the neighbour's weights (seen on a 20000-photon
    z-stack deconvolution) is not the stack's failure: that slice runs again from random
    weights with all its iterations, and says so."""
    from src_core.errors import Diverged
    from src_core.problem import Problem

    frames = drifting()
    real_run, calls = Problem.run, []

    def run(self, index=0, stop=None, checkpoint=None, start=None):
        calls.append(start is not None)
        if start is not None and len(calls) == 2:  # the first warm start falls at every check
            raise Diverged("the fit diverged at 3 checks in a row from the starting weights")
        return real_run(self, index, stop=stop, checkpoint=checkpoint, start=start)

    monkeypatch.setattr(Problem, "run", run)
    result = src_core.restore(frames, warm_start=0.25, **SMALL)
    assert calls == [False, True, False, True]  # slice 1 warm (fell), slice 1 cold, slice 2 warm
    assert [h.config["iterations"] for h in result.histories] == [40, 40, 10]
    assert any("slice 1: its fit diverged from the weights of the slice before; it ran again from random"
               in n for n in result.notes), result.notes
    cold = src_core.restore(frames, warm_start=0, **SMALL)
    assert result.histories[1].psnr == cold.histories[1].psnr  # the cold run of that slice, exactly

