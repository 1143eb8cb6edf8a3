"""The answer a user gets: observed pixels kept, the classical answer beside, a preset that fits
the device, validation on held-out pixels (best iterate, blend, early stop)."""

import numpy as np
import pytest

import src_core
from src_core import DIPError, bernoulli_mask, make_config, restore
from src_core.problem import blend_weight
from src_core.cli import main

TINY = dict(preset="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2,
            report_every=5, device="cpu")


def _photo(size=64):
    return src_core.load_sample("table1/house.png")[64:192:128 // size, 64:192:128 // size]


def test_observed_pixels_are_kept_by_default_and_the_option_turns_it_off():
    img = _photo()
    mask = bernoulli_mask(img.shape, 0.5, 3)
    kept = restore(img, mask, iterations=10, **TINY)
    assert np.array_equal(kept.image[mask], img[mask])
    assert not np.array_equal(kept.image[~mask], img[~mask])  # the holes were filled
    raw = restore(img, mask, iterations=10, keep_observed=False, validate=0, classical=None, **TINY)
    assert not np.array_equal(raw.image[mask], img[mask])
    assert raw.to_dict()["answer"] == {"keep_observed": False, "validate": 0.0, "classical": None}


def test_denoising_does_not_keep_the_noisy_pixels():
    noisy = np.clip(_photo() / 255 + np.random.default_rng(0).normal(0, 0.1, (64, 64)), 0, 1)
    result = restore(noisy, task="denoise", iterations=10, **TINY)
    assert result.keep_observed is False
    assert np.abs(result.image - noisy).mean() > 0.01


def test_no_preset_on_a_cpu_picks_the_cpu_preset_and_denoising_gets_its_settings():
    assert make_config("inpaint", device="cpu").preset == "cpu"
    assert make_config("random", device="cpu").preset == "cpu"
    denoise = make_config("denoise", device="cpu")
    assert (denoise.preset, denoise.ema, denoise.early_stop) == ("cpu", 0.99, True)
    assert make_config("inpaint", "text", device="cpu").preset == "text"  # asked for: kept
    assert make_config("denoise", device="cpu", ema=0.9).ema == 0.9       # overrides win


def test_the_prior_estimate_grows_with_size_and_iterations():
    from src_core import timing

    def prior(name, size):
        return timing.estimate(src_core.preset(name, device="cpu"), 1, (size, size), measure=False)

    small, big, paper = prior("cpu", 128), prior("cpu", 256), prior("text", 256)
    assert 0 < small.s_per_iteration < big.s_per_iteration < paper.s_per_iteration
    assert paper.total_s > timing.LONG_RUN_S  # the paper's preset on a CPU is a long run
    assert not big.measured and "s/it x 800 it on cpu" in big.describe() and "not measured" in big.describe()


def test_the_estimate_is_measured_here_once_and_then_kept(tmp_path, monkeypatch):
    """A calibration on this machine, kept on disk: the next estimate (another process's too)
    reads it instead of stepping the network again."""
    from src_core import timing

    monkeypatch.setenv("DIP_CACHE_DIR", str(tmp_path))
    cfg = src_core.preset("cpu", device="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2,
                          iterations=40)
    calibrations = []
    real = timing._calibrate
    monkeypatch.setattr(timing, "_calibrate", lambda *a: calibrations.append(a) or real(*a))
    first = timing.estimate(cfg, 1, (32, 32), threads=1)
    assert first.measured and len(calibrations) == 1 and (tmp_path / "timing.json").is_file()
    assert first.total_s == pytest.approx(40 * first.s_per_iteration + first.setup_s)
    assert "measured here" in first.describe() and "not measured" not in first.describe()
    again = timing.estimate(cfg.replace(iterations=80), 1, (32, 32), threads=1)  # the count is no setting of it
    assert len(calibrations) == 1 and again.s_per_iteration == first.s_per_iteration
    timing._loaded_from = None  # as a new process: read from the file
    assert timing.estimate(cfg, 1, (32, 32), threads=1, measure=False).measured
    assert len(calibrations) == 1


def test_an_estimate_with_early_stopping_is_an_upper_bound():
    from src_core import timing

    cfg = src_core.make_config("denoise", device="cpu")
    estimate = timing.estimate(cfg, 1, (64, 64), measure=False)
    assert estimate.upper_bound and estimate.describe().startswith("at most")
    assert "early stopping may end it sooner" in estimate.describe()


def test_cli_prints_the_estimate_and_warns_on_a_long_run(tmp_path, capsys, monkeypatch):
    from src_core import io, timing

    monkeypatch.setattr(timing, "LONG_RUN_S", 0.0)
    image = tmp_path / "in.png"
    io.write_image(image, _photo())
    code = main(["random", str(image), "--preset", "cpu", "--set", "scales=2", "--set", "down_channels=8",
                 "--set", "up_channels=8", "--iterations", "6", "--device", "cpu", "--quiet",
                 "--threads", "1", "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0
    assert "with preset 'cpu': about" in out and "s/it x 6 it on cpu" in out
    assert "long run" in err
    # the honest comparison: corrupted, DIP, classical and the answer, and the classical image
    assert "PSNR: corrupted" in out and "biharmonic" in out and "answer" in out
    assert (tmp_path / "out" / "in_classical.png").is_file()


def test_threads_must_be_positive(capsys):
    assert main(["presets", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_blend_weight_is_the_least_squares_mix():
    rng = np.random.default_rng(0)
    truth = rng.random(1000)
    dip, classical = truth + rng.normal(0, 0.1, 1000), truth + rng.normal(0, 0.1, 1000)
    assert 0.35 < blend_weight(dip, classical, truth) < 0.65   # equal errors: about half each
    assert blend_weight(truth, classical, truth) == pytest.approx(1.0)
    assert blend_weight(dip, truth, truth) == pytest.approx(0.0, abs=1e-9)
    assert blend_weight(truth, truth, truth) == 1.0              # identical: no division by zero


def test_a_short_run_is_never_far_below_the_classical_answer():
    """After 3 steps the network is still noise; the held-out pixels say so and the answer
    leans on the classical fill instead of returning noise."""
    img = _photo()
    result = restore(img, task="random", iterations=3, **TINY)
    s = result.history.summary
    assert s["blend_alpha"] < 0.5
    assert s["psnr_answer"] > s["psnr_dip"] + 3
    assert s["psnr_answer"] >= s["psnr_classical"] - 0.5
    assert s["psnr_corrupted"] < s["psnr_classical"]
    assert result.history.final_psnr == s["psnr_answer"]
    assert result.classical.shape == img.shape and result.classical.dtype == img.dtype


def test_a_short_denoising_run_leans_on_non_local_means():
    """Held-out noisy pixels set the blend weight too: their noise is unseen by both methods."""
    rng = np.random.default_rng(2)
    clean = _photo() / 255.0
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    s = restore(noisy, task="denoise", reference=clean, iterations=3, **TINY).history.summary
    assert s["classical_method"] == "nlm" and s["blend_alpha"] is not None
    assert s["blend_alpha"] < 0.5
    assert s["psnr_answer"] >= s["psnr_classical"] - 0.3
    assert s["psnr_answer"] > s["psnr_dip"] + 1


def test_a_short_deconvolution_leans_on_richardson_lucy_judged_through_the_blur():
    """Held-out pixels of a blurred image judge each answer by the blurred image it predicts
    there: a run far from done is not returned as it is (on a CPU a deconvolution can end
    10 dB below its own input, docs/results/deconvolution); super-resolution does not blend."""
    from scipy.ndimage import convolve

    clean = _photo() / 255.0
    blurred = convolve(clean, src_core.gaussian_psf(1.5), mode="nearest")
    result = restore(blurred, task="deconvolve", psf=1.5, reference=clean, iterations=3, **TINY)
    s = result.history.summary
    assert s["classical_method"] == "richardson-lucy" and s["blend_alpha"] < 0.5
    # the weight is the least-squares best on the held-out pixels: never worse there than either
    assert s["val_psnr_answer"] >= max(s["val_psnr_dip"], s["val_psnr_classical"]) - 1e-6
    assert s["psnr_answer"] > s["psnr_dip"] + 3 and s["psnr_answer"] >= s["psnr_classical"] - 0.5
    assert any("through Blur" in n for n in result.notes)
    sr = src_core.prepare(clean, task="sr", factor=2, validate=0.3, **dict(TINY, iterations=3))
    assert sr.held_out is not None and not sr.blends


def test_validation_early_stop_fires_on_a_tiny_denoising_run():
    rng = np.random.default_rng(1)
    clean = _photo() / 255.0
    noisy = np.clip(clean + rng.normal(0, 0.15, clean.shape), 0, 1)
    result = restore(noisy, task="denoise", reference=clean, iterations=600, es_patience=40,
                     lr=0.05, early_stop=True, **TINY)
    h = result.history
    assert h.early_stop is not None and h.early_stop["rule"] == "validation PSNR"
    assert h.timings["iterations"] < 600
    assert h.answer_iteration == h.early_stop["best_iteration"]
    best = h.iterations.index(h.answer_iteration)
    assert h.val_psnr[best] == max(h.val_psnr)            # the answer is the best-validated iterate
    assert h.summary["psnr_answer"] > h.summary["psnr_corrupted"] + 3


@pytest.mark.parametrize("bad,words", [(dict(validate=0.7), "validate is the fraction"),
                                       (dict(validate="yes"), "validate is the fraction"),
                                       (dict(classical="median"), "classical must be")])
def test_bad_answer_options(bad, words):
    with pytest.raises(DIPError, match=words):
        restore(_photo(), task="random", iterations=2, **TINY, **bad)


def test_too_few_observed_pixels_switch_validation_off_with_a_note():
    img = _photo()
    mask = np.zeros(img.shape, bool)
    mask[:4, :4] = True
    result = restore(img, mask, iterations=2, **TINY)
    assert result.validate == 0.0 and any("validation is off" in n for n in result.notes)


@pytest.mark.parametrize("val,gain", [
    ([20 + k for k in range(12)], 3.0),              # rising to the end: unfinished
    ([20, 25, 28, 29, 30, 30, 30, 30, 30, 30, 30, 30], None),  # a plateau: done
    ([20, 25, 28, 31, 32, 33, 32, 31, 30, 29, 28, 27], None),  # past its best: done
    ([None] * 12, None),                              # nothing held out: unknown
])
def test_a_run_is_called_unfinished_only_while_its_held_out_fit_still_rises(val, gain):
    history = src_core.History(iterations=list(range(25, 325, 25)), val_psnr=val)
    assert history.still_improving == gain


def test_a_run_cut_short_says_more_iterations_would_help(tmp_path, capsys):
    """A 40-iteration deconvolution is far from done: the history, the CLI and its numbers say so."""
    from src_core.io import write_image

    clean = _photo()
    blurred = restore(clean, task="deconvolve", iterations=1, classical=None, validate=0, **TINY).corrupted
    result = restore(blurred, task="deconvolve", iterations=40, classical=None, **TINY)
    assert result.histories[0].still_improving > 0
    assert any("still improving" in n and "iterations=80" in n for n in result.histories[0].notes)
    write_image(tmp_path / "b.png", blurred)
    assert main(["deconvolve", str(tmp_path / "b.png"), "-o", str(tmp_path / "o"), "--iterations", "40",
                 "--classical", "none", "--set", "scales=2", "--set", "down_channels=8", "--set",
                 "up_channels=8", "--set", "skip_channels=2", "--report-every", "5", "--device", "cpu"]) == 0
    assert "more, e.g. --iterations 80, would most likely" in capsys.readouterr().out


def test_a_problems_estimate_times_its_classical_answers_and_the_run_reuses_them(tmp_path, monkeypatch):
    """The estimate runs slice 0's classical answers for real (their time is part of the run's),
    and the run takes them from there instead of computing them again."""
    import src_core.problem

    monkeypatch.setenv("DIP_CACHE_DIR", str(tmp_path))
    calls = []
    real = src_core.problem.classical_answer
    monkeypatch.setattr(src_core.problem, "classical_answer", lambda *a: calls.append(a[0]) or real(*a))
    image = _photo()
    problem = src_core.prepare(image, task="random", preset="cpu", scales=2, down_channels=8, up_channels=8,
                               iterations=10, device="cpu", threads=1)
    estimate = problem.estimate()
    assert calls == ["biharmonic", "biharmonic"]  # the answer's, and the blend's from the fitted pixels
    assert estimate.classical_s > 0 and estimate.measured
    assert estimate.total_s == pytest.approx(estimate.setup_s + 10 * estimate.s_per_iteration
                                             + estimate.classical_s)
    src_core.restore_problem(problem, image)
    assert calls == ["biharmonic", "biharmonic"]


def test_a_context_learns_how_much_slower_than_calibrated_it_runs(tmp_path, monkeypatch):
    """napari's runs teach later estimates there: the median ratio of its recent runs."""
    from src_core import timing

    monkeypatch.setenv("DIP_CACHE_DIR", str(tmp_path))
    assert timing.context_factor("napari") == 1.0 and timing.context_factor(None) == 1.0
    assert timing.learn("napari", 0.10, 0.16) == pytest.approx(1.6)  # ran 1.6x slower
    cfg = src_core.preset("cpu", device="cpu", scales=2, down_channels=8, up_channels=8, skip_channels=2)
    plain = timing.estimate(cfg, 1, (32, 32), threads=1)
    inside = timing.estimate(cfg, 1, (32, 32), threads=1, context="napari")
    assert inside.s_per_iteration == pytest.approx(1.6 * plain.s_per_iteration)
    assert inside.calibrated_step_s == plain.s_per_iteration  # what a finished run is compared with
    assert not timing.estimate(cfg, 1, (32, 32), measure=False, threads=2, context="napari").measured
    timing.learn("napari", 0.02, 0.024)
    assert timing.learn("napari", 0.05, 0.055) == pytest.approx(1.2)  # the median of 1.6, 1.2, 1.1
    assert timing.learn("napari", 0.1, float("nan")) == pytest.approx(1.2)  # nothing to learn from
    for _ in range(timing.CONTEXT_RUNS):
        timing.learn("napari", 0.05, 0.05)
    assert timing.context_factor("napari") == pytest.approx(1.0)  # the oldest runs are forgotten


def test_a_classical_methods_time_is_measured_once_per_size(tmp_path, monkeypatch):
    from src_core import timing

    monkeypatch.setenv("DIP_CACHE_DIR", str(tmp_path))
    assert timing.classical_seconds(None, 1, (64, 64)) == 0.0
    assert timing.classical_seconds("biharmonic", 1, (64, 64), holes="random", measure=False) == 0.0
    first = timing.classical_seconds("biharmonic", 1, (64, 64), holes="random")
    assert first > 0
    assert timing.classical_seconds("biharmonic", 1, (64, 64), holes="random", measure=False) == first
    # a larger image is timed at CLASSICAL_PIXELS and scaled by its pixel count
    monkeypatch.setattr(timing, "CLASSICAL_PIXELS", 32 * 32)
    small = timing.classical_seconds("nlm", 1, (32, 32))
    assert timing.classical_seconds("nlm", 1, (64, 64), measure=False) == pytest.approx(4 * small)


def _history(iterations, val):
    return src_core.History(iterations=list(iterations), val_psnr=list(val),
                            psnr=[None] * len(val), fit_psnr=[0.0] * len(val))


def test_the_iterations_dip_would_need_come_from_its_held_out_curve():
    its = list(range(100, 1100, 100))
    rising = _history(its, [20 + 2 * np.log(i / 100) for i in its])   # +2 dB per e-fold
    # from 1000 iterations at 24.6 dB to 26.6 dB: one more e-fold, about 2718 in all
    reach = src_core.problem.iterations_to_reach
    assert reach(rising, rising.val_psnr[-1] + 2) == (2800, "rate")
    assert reach(rising, 10.0) == (1000, "reached")
    assert reach(rising, 60.0) == (None, "too far")                       # > 100x: says nothing
    assert reach(_history(its, [25.0] * len(its)), 26.0) == (None, "flat")
    assert reach(_history(its[:3], [20, 21, 22]), 26.0) == (None, "too short")


def test_an_answer_that_is_the_classical_one_says_so_in_plain_words():
    """DIP's weight near 0: the summary, and so the CLI, the widget and the metadata, say that
    the answer is the classical one, what DIP alone reached and what more iterations would do."""
    img = _photo()
    result = restore(img, task="random", iterations=3, **TINY)   # 3 steps: the network is noise
    s = result.history.summary
    assert s["blend_alpha"] < src_core.problem.CLASSICAL_ONLY_WEIGHT
    assert s["verdict"].startswith(f"the answer is the biharmonic one (DIP's weight {s['blend_alpha']:.2f}): "
                                   f"DIP alone reached {s['psnr_dip']:.2f} dB, biharmonic {s['psnr_classical']:.2f} dB")
    assert s["verdict"].endswith("3 iterations are too few to tell how many more DIP would need.")
    added = {**s, "blend_alpha": 0.3}                                 # DIP added something: no verdict
    assert src_core.problem.classical_only_verdict(added, result.history) is None
    from src_core.cli.report import summary_lines

    assert any(line.startswith("the answer is the biharmonic one") for line in summary_lines(result))
