import numpy as np
import pytest
import torch

from src_core import DIPError, DIPRun, EarlyStop, Finished, Progress, Recovery, bernoulli_mask


def _events(run):
    return list(run)


def test_events_arrive_every_k_and_end_with_finished(tiny, small_image):
    run = DIPRun(small_image[None], bernoulli_mask((32, 32), 0.5, 0), tiny(iterations=12, report_every=4),
                 reference=small_image[None])
    events = _events(run)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [e.iteration for e in progress] == [4, 8, 12]
    assert all(e.psnr is not None and e.output is None for e in progress)
    assert isinstance(events[-1], Finished)
    fin = events[-1]
    assert fin.output.shape == (1, 32, 32) and fin.output.dtype == np.float32
    assert len(fin.history.loss) == 12 and fin.history.iterations == [4, 8, 12]
    assert fin.history.timings["s_per_iteration"] > 0


def test_snapshots_only_when_asked(tiny, small_image):
    events = _events(DIPRun(small_image[None], None, tiny(iterations=6, report_every=2, snapshot_every=3)))
    snaps = [e for e in events if isinstance(e, Progress) and e.output is not None]
    assert [e.iteration for e in snaps] == [3, 6]
    assert snaps[0].output.shape == (1, 32, 32)


def test_same_seed_same_result_different_seed_different(tiny, small_image):
    mask = bernoulli_mask((32, 32), 0.5, 1)
    a = DIPRun(small_image[None], mask, tiny(seed=5)).run().output
    b = DIPRun(small_image[None], mask, tiny(seed=5)).run().output
    c = DIPRun(small_image[None], mask, tiny(seed=6)).run().output
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "meshgrid"])
def test_input_kinds_and_lbfgs_run(tiny, small_image, kind):
    channels = 2 if kind == "meshgrid" else 4
    cfg = tiny(input_kind=kind, input_channels=channels, optimizer="lbfgs", lbfgs_warmup=3, iterations=8)
    fin = DIPRun(np.repeat(small_image[None], 3, 0), None, cfg).run()
    assert fin.output.shape == (3, 32, 32) and np.isfinite(fin.history.loss).all()


def test_odd_sizes_are_padded_and_cropped_back(tiny):
    img = np.random.default_rng(0).random((2, 37, 45)).astype(np.float32)
    fin = DIPRun(img, None, tiny(iterations=3)).run()
    assert fin.output.shape == (2, 37, 45)


def test_guard_restores_the_last_good_weights_after_a_blow_up(tiny, small_image):
    cfg = tiny(iterations=40, guard_every=5, report_every=5, lr=0.01, sigma_p=0.0)
    run = DIPRun(small_image[None], None, cfg)
    recovered = None
    for event in run:
        if isinstance(event, Progress) and event.iteration == 20:
            with torch.no_grad():  # force a blow-up: wreck every weight
                for p in run.network.parameters():
                    p.mul_(-40.0).add_(torch.randn_like(p) * 10)
            wrecked = [p.detach().clone() for p in run.network.parameters()]
        if isinstance(event, Recovery):
            recovered = event
            restored = [p.detach().clone() for p in run.network.parameters()]
            good = run._saved_weights
            assert all(torch.equal(a, b) for a, b in zip(restored, good))
            assert not any(torch.equal(a, b) for a, b in zip(restored, wrecked) if a.numel() > 1)
        if isinstance(event, Finished):
            finished = event
    assert recovered is not None and recovered.iteration == 25
    assert recovered.fit_psnr < recovered.previous_fit_psnr - 5
    assert finished.history.recoveries[0]["iteration"] == 25
    # after the recovery the fit is back near where it was before the blow-up
    fits = dict(zip(finished.history.iterations, finished.history.fit_psnr))
    assert fits[30] > recovered.fit_psnr + 5


def test_guard_off_lets_the_blow_up_stand(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=30, guard=False, guard_every=5, sigma_p=0.0))
    kinds = []
    for event in run:
        kinds.append(event.kind)
        if isinstance(event, Progress) and event.iteration == 20:
            with torch.no_grad():
                for p in run.network.parameters():
                    p.mul_(-40.0)
    assert "recovery" not in kinds


def test_early_stopping_fires_and_reports_where(tiny, small_image):
    cfg = tiny(iterations=400, early_stop=True, es_window=5, es_patience=30, report_every=10,
               lr=0.05, guard=False)
    events = _events(DIPRun(small_image[None], bernoulli_mask((32, 32), 0.5, 0), cfg))
    stops = [e for e in events if isinstance(e, EarlyStop)]
    assert len(stops) == 1
    stop = stops[0]
    assert stop.iteration < 400 and stop.iteration - stop.best_iteration >= 30
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.completed == stop.iteration
    assert fin.history.early_stop == {"iteration": stop.iteration, "best_iteration": stop.best_iteration}


def test_close_stops_at_once_and_frees_the_network(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=1000, report_every=2))
    first = next(run)
    assert first.iteration == 2 and run.network is not None
    run.close()
    assert run.network is None and run.completed == 2
    with pytest.raises(StopIteration):
        next(run)


def test_request_stop_keeps_the_partial_answer(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=1000, report_every=4))
    next(run)
    run.request_stop()
    rest = list(run)
    fin = rest[-1]
    assert isinstance(fin, Finished) and fin.stopped and fin.completed == 4  # stops within one step
    assert fin.output.shape == (1, 32, 32)


def test_ema_is_the_answer_when_on(tiny, small_image):
    cfg = tiny(iterations=10, ema=0.9)
    for event in DIPRun(small_image[None], None, cfg):
        pass
    assert event.output.shape == (1, 32, 32)
    # With ema 0.9 over 10 steps from zero the answer is damped: mean well below the image mean
    assert event.output.mean() < 0.8 * small_image.mean()


@pytest.mark.parametrize("mask,words", [
    (np.ones((16, 16), bool), r"mask shape \(16, 16\) does not match image shape \(1, 32, 32\)"),
    (np.zeros((32, 32), bool), "no observed pixel"),
])
def test_bad_masks(tiny, small_image, mask, words):
    with pytest.raises(DIPError, match=words):
        DIPRun(small_image[None], mask, tiny())


def test_image_too_small_for_the_depth(tiny):
    with pytest.raises(DIPError, match="too small for a 5-scale network"):
        DIPRun(np.zeros((1, 40, 40), np.float32), None, tiny(scales=5))


def test_missing_device_is_named(tiny, small_image):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DIPError, match="device 'cuda' is not available"):
        DIPRun(small_image[None], None, tiny(device="cuda"))


def test_engine_refuses_nan_and_never_modifies_input(tiny, small_image):
    img = small_image[None].copy()
    img[0, 3, 3] = np.nan
    with pytest.raises(DIPError, match="non-finite"):
        DIPRun(img, None, tiny())
    clean = small_image[None].copy()
    before = clean.copy()
    DIPRun(clean, None, tiny(iterations=2)).run()
    assert np.array_equal(clean, before)


def test_restoration_really_works_on_half_missing_pixels():
    """End to end: 50% pixels missing on a real 64x64 photo crop; a short run lifts PSNR far above the input."""
    from skimage.metrics import peak_signal_noise_ratio

    import src_core

    img = src_core.load_sample("table1/house.png")[64:192:2, 64:192:2]  # 64x64 uint8
    result = src_core.restore(img, task="random", preset="cpu", scales=3, iterations=300,
                              report_every=50, device="cpu", seed=0)
    corrupted = peak_signal_noise_ratio(img, result.corrupted)
    restored = peak_signal_noise_ratio(img, result.image)
    assert restored > corrupted + 12, (corrupted, restored)
    assert result.history.final_psnr == pytest.approx(restored, abs=0.1)
