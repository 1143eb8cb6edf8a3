"""Restarts (RunConfig.restarts): K networks fitted together; the answer is their mean and their
disagreement is ``result.spread``, a map of where the fill is uncertain."""

import json
import subprocess
import sys

import numpy as np
import pytest

import src_core
from src_core import DIPError, DIPRun, RunConfig, bernoulli_mask

SMALL = dict(task="random", preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2,
             iterations=30, report_every=10, device="cpu", threads=1)


def smooth(size=48, channels=None):
    y, x = np.mgrid[0:size, 0:size] / size
    img = (0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y)).astype(np.float32)
    return img if channels is None else np.stack([img, img[::-1], img.T], axis=-1)


def test_restarts_are_the_runs_of_their_seeds_and_the_answer_is_their_mean(tiny):
    img = smooth(32)[None]
    mask = bernoulli_mask((32, 32), 0.5)
    # one thread for all: the default follows the load average
    together = DIPRun(img, mask, tiny(restarts=3), reference=img, threads=1).run()
    alone = [DIPRun(img, mask, tiny(seed=k), reference=img, threads=1).run() for k in range(3)]
    assert together.members.shape == (3, 1, 32, 32)
    for k in range(3):
        # the same run to float32 rounding: bit for bit in bf16 and on AVX2, but in float32 an AVX-512
        # CPU's convolutions sum a batch of 3 in another order than one image (1.5e-7 apart here)
        np.testing.assert_allclose(together.members[k], alone[k].output, rtol=0, atol=1e-5)
    np.testing.assert_allclose(together.output, np.mean([a.output for a in alone], axis=0), atol=1e-6)
    np.testing.assert_allclose(together.spread, np.std([a.output for a in alone], axis=0, ddof=1), atol=1e-5)
    # one history: each curve the members' mean at each report
    assert together.history.iterations == alone[0].history.iterations
    np.testing.assert_allclose(together.history.psnr, np.mean([a.history.psnr for a in alone], axis=0))
    assert together.history.fast_path["restarts"] == 3
    assert DIPRun(img, mask, tiny()).run().spread is None


def test_spread_has_the_answers_shape_and_units_is_zero_on_kept_pixels_and_absent_for_one_run():
    img = (smooth(48, channels=3) * 200 + 20).astype(np.uint8)
    result = src_core.restore(img, restarts=2, **SMALL)
    assert result.spread.shape == img.shape and result.spread.dtype == np.float32
    observed = result.mask[0].transpose(1, 2, 0)
    assert result.keep_observed and np.all(result.spread[observed] == 0)
    missing = result.spread[~observed]
    # in 8-bit units: a standard deviation of [0, 1] values could never pass 1
    assert missing.min() >= 0 and missing.mean() > 1.0
    assert result.history.summary["restarts"] == 2 and len(result.history.summary["psnr_dip_members"]) == 2
    assert src_core.restore(img, **SMALL).spread is None
    assert "restarts" not in RunConfig().to_dict()  # old configurations' fingerprints are unchanged


def test_a_stack_keeps_each_slices_spread_through_a_resume_and_tiles_blend_theirs(tmp_path):
    frames = np.stack([smooth(32), smooth(32)[::-1]])
    first = src_core.restore(frames, restarts=2, warm_start=0, checkpoint_dir=tmp_path, **SMALL)
    again = src_core.restore(frames, restarts=2, warm_start=0, checkpoint_dir=tmp_path, **SMALL)
    assert any("loaded from the checkpoint" in n for n in again.histories[1].notes)
    np.testing.assert_array_equal(first.spread, again.spread)
    assert first.spread.shape == frames.shape and np.all(first.spread[1][first.mask[1, 0]] == 0)
    tiled = src_core.restore_tiled(smooth(64), restarts=2, tile=40, overlap=8, **SMALL)
    assert tiled.spread.shape == (64, 64) and np.isfinite(tiled.spread).all() and tiled.spread.max() > 0


def test_denoising_restarts_stop_together_on_the_held_out_rule():
    noisy = np.clip(smooth(48) + np.random.default_rng(0).normal(0, 0.05, (48, 48)), 0, 1).astype(np.float32)
    result = src_core.restore(noisy, **{**SMALL, "task": "denoise", "iterations": 40}, restarts=2, es_patience=10)
    assert result.spread.shape == noisy.shape and result.spread.max() > 0  # denoising keeps no pixel
    assert result.history.timings["iterations"] <= 40


def test_bad_restarts_are_refused_before_any_work():
    with pytest.raises(DIPError, match="restarts"):
        RunConfig(restarts=0).validate()
    with pytest.raises(DIPError, match="restarts are fitted together with Adam"):
        RunConfig(restarts=2, optimizer="lbfgs").validate()
    with pytest.raises(DIPError, match="restarts"):
        src_core.restore(smooth(32), restarts=2.5, **SMALL)


def test_restarts_cost_k_times_one_run_in_the_estimate():
    one = src_core.timing.step_time(src_core.preset("cpu"), 3, (128, 128), threads=1, measure=False)
    three = src_core.timing.step_time(src_core.preset("cpu", restarts=3), 3, (128, 128), threads=1, measure=False)
    assert three.step_s == pytest.approx(3 * one.step_s)


def test_the_cli_writes_the_spread_as_float_tiff_beside_the_answer(tmp_path):
    import imageio.v3 as iio
    import tifffile

    src = tmp_path / "scene.png"
    iio.imwrite(src, (smooth(40, channels=3) * 255).astype(np.uint8))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "src_core.cli", "random", str(src), "-o", str(out), "--quiet",
                           "--iterations", "20", "--restarts", "2", "--set", "scales=2", "--set", "down_channels=8",
                           "--set", "up_channels=8", "--set", "skip_channels=2", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    spread = tifffile.imread(out / "scene_spread.tif")
    assert spread.shape == (40, 40, 3) and spread.dtype == np.float32 and spread.max() > 0.5
    assert "mean of 2 restarts" in proc.stdout
    assert json.loads((out / "scene_history.json").read_text())["config"]["restarts"] == 2
