import copy

import numpy as np
import pytest
import torch

from src_core import DIPError, DIPRun, EarlyStop, Finished, Progress, Recovery, bernoulli_mask
from src_core import speed


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
    # one thread: the default follows the load average, and another count sums in another order
    a = DIPRun(small_image[None], mask, tiny(seed=5), threads=1).run().output
    b = DIPRun(small_image[None], mask, tiny(seed=5), threads=1).run().output
    c = DIPRun(small_image[None], mask, tiny(seed=6), threads=1).run().output
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
            good = run.fit.guard_.weights
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


def test_early_stopping_answers_the_running_average_at_its_iteration(tiny, small_image):
    """With ``ema`` on the answer is the running average, early stop or not: ES-WMV picks the
    iteration from the raw outputs' variance and answers the average there, not the raw output."""
    cfg = tiny(iterations=400, early_stop=True, es_window=5, es_patience=30, report_every=1,
               snapshot_every=1, lr=0.05, guard=False, ema=0.9)
    events = _events(DIPRun(small_image[None], bernoulli_mask((32, 32), 0.5, 0), cfg))
    stop = next(e for e in events if isinstance(e, EarlyStop))
    averages = {e.iteration: e.output for e in events if isinstance(e, Progress)}
    fin = events[-1]
    np.testing.assert_array_equal(fin.output, np.clip(averages[stop.best_iteration], 0, 1))
    neighbours = [np.abs(averages[stop.best_iteration + d] - fin.output).max() for d in (-1, 1)]
    assert min(neighbours) > 0  # the average moves each iteration: the match above is no accident


def test_the_window_variance_from_running_sums_is_the_exact_variance():
    """ES-WMV keeps running sums; over many turns of the window its variance log must stay the
    exact one (float64, from the last W outputs), and the kept estimate must be the argmin's."""
    from src_core.config import RunConfig
    from src_core.engine.stopping import WindowVariance

    rng = np.random.default_rng(0)
    window, total = 7, 60
    # A slow drift plus small wiggles: late variances far below the values, as in a real run.
    steps = [0.5 + 0.3 * np.sin(np.arange(48) / 5.0) + 1e-3 * rng.standard_normal(48) / (1 + it)
             for it in range(total)]
    outputs = [torch.tensor(s.reshape(1, 3, 4, 4), dtype=torch.float32) for s in steps]
    es = WindowVariance(RunConfig(es_window=window), outputs[0], total)
    for it, out in enumerate(outputs, start=1):
        es.push(it, out, estimate=out + 1.0)
        if it == 31:  # a checkpoint from before the running sums: the window alone, sums remade
            es.sums.fill_(123.0)
            es.resum()
    history = np.stack([o[0].double().numpy() for o in outputs])
    exact = [history[it - window:it].var(axis=0).mean() for it in range(window, total + 1)]
    np.testing.assert_allclose(es.log[window - 1:].numpy(), exact, rtol=1e-9, atol=0)
    assert np.isinf(es.log[:window - 1].numpy()).all()
    best = es.best_iteration(total)
    assert best == int(np.argmin(exact)) + window
    torch.testing.assert_close(es.best, outputs[best - 1] + 1.0, rtol=0, atol=0)


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


def test_ema_starts_from_the_first_output_not_from_zero(tiny, small_image):
    """The original notebooks start the average at the first output; starting at zero made
    short denoising runs come out dark (the answer after 10 steps at 0.99 was 10% bright)."""
    plain = DIPRun(small_image[None], None, tiny(iterations=1)).run().output
    first = DIPRun(small_image[None], None, tiny(iterations=1, ema=0.99)).run().output
    np.testing.assert_array_equal(first, plain)
    short = DIPRun(small_image[None], None, tiny(iterations=10, ema=0.99)).run().output
    assert short.mean() > 0.8 * plain.mean()  # not damped towards black


def test_ema_warmup_is_the_average_at_a_growing_rate(tiny, small_image):
    """With ``ema_warmup`` the answer is the outputs averaged at min(ema, (1+t)/(10+t)): checked
    against the raw outputs of the same run (the average does not change the fit); without it
    the first output would keep 0.95**9 = 63% of the weight after 10 steps, with it 0.03%."""
    raw = [e.output for e in DIPRun(small_image[None], None, tiny(iterations=10, report_every=1,
                                                                   snapshot_every=1, guard=False))
           if isinstance(e, Progress)]
    run = DIPRun(small_image[None], None, tiny(iterations=10, report_every=1, snapshot_every=1, guard=False,
                                               ema=0.95, ema_warmup=True))
    averages = [e.output for e in run if isinstance(e, Progress)]
    expected = raw[0].astype(np.float64)
    for t in range(2, 11):
        rate = min(0.95, (1 + t) / (10 + t))
        expected = rate * expected + (1 - rate) * raw[t - 1]
        np.testing.assert_allclose(averages[t - 1], expected, rtol=0, atol=1e-5)
    plain = DIPRun(small_image[None], None, tiny(iterations=10, guard=False, ema=0.95)).run().output
    last = np.clip(raw[-1], 0, 1)  # the warmed-up average is near the latest output, the plain one is not
    assert np.abs(averages[-1] - last).mean() < 0.5 * np.abs(plain - last).mean()


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
    result = src_core.restore(img, task="random", preset="cpu", scales=3, down_channels=16,
                              up_channels=16, skip_channels=4, upsample="bilinear", iterations=300,
                              report_every=50, device="cpu", seed=0)
    corrupted = peak_signal_noise_ratio(img, result.corrupted)
    restored = peak_signal_noise_ratio(img, result.image)
    assert restored > corrupted + 12, (corrupted, restored)
    assert result.history.final_psnr == pytest.approx(restored, abs=0.1)


# ----------------------------------------------------------------------------- fast path

def test_channels_last_changes_only_the_layout():
    """Same weights, one training-mode step: channels_last gives the same output and gradients
    up to summation order.  (Comparing after many Adam steps would compare chaos: Adam's first
    steps are sign-like, so rounding differences grow at a rate that depends on the CPU.)"""
    torch.manual_seed(0)
    net = tiny_network()
    z = torch.rand(1, 4, 32, 32) * 0.1

    def step(memory_format):
        model = copy.deepcopy(net).to(memory_format=memory_format)
        out = model(z.contiguous(memory_format=memory_format))
        out.square().mean().backward()
        return out.detach(), [p.grad.detach() for p in model.parameters()]

    out_a, grads_a = step(torch.contiguous_format)
    out_b, grads_b = step(torch.channels_last)
    assert (out_a - out_b).abs().max() < 1e-4  # float32 rounding (7e-7 on AVX2); a layout bug is O(0.1)
    # relative to the whole gradient: biases before a BatchNorm have a true gradient of zero,
    # so theirs is rounding noise of either sign
    scale = max(g.abs().max() for g in grads_a)
    assert max((ga - gb).abs().max() for ga, gb in zip(grads_a, grads_b)) <= 1e-4 * scale


def test_fast_path_settings_are_recorded_and_start_from_the_same_loss(tiny, small_image):
    mask = bernoulli_mask((32, 32), 0.5, 0)

    def run(iterations, precision, memory_format):
        cfg = tiny(iterations=iterations, precision=precision, memory_format=memory_format)
        return DIPRun(small_image[None], mask, cfg).run()

    ref = run(3, "float32", "contiguous")
    assert {k: ref.history.fast_path[k] for k in ("precision", "memory_format", "compile", "members")} \
        == {"precision": "float32", "memory_format": "contiguous", "compile": False, "members": 1}
    layout = run(3, "float32", "channels_last")
    assert layout.history.fast_path["memory_format"] == "channels_last"
    # the first loss is computed before any step: the same network, only the layout differs
    assert layout.history.loss[0] == pytest.approx(ref.history.loss[0], rel=1e-5)
    # bf16 body, float32 head: close to float32 (emulated where the CPU has no bf16 units);
    # equal final quality is the benchmark's job (benchmarks/fast_path.py)
    fast = run(3, "bfloat16", "channels_last")
    assert fast.history.fast_path["precision"] == "bfloat16"
    assert fast.output.dtype == np.float32
    assert len(np.unique(fast.output)) > 500  # float32 head: not quantised to bf16's 256 steps
    assert fast.history.loss[0] == pytest.approx(ref.history.loss[0], rel=0.02)
    assert np.abs(fast.output - ref.output).mean() < 0.03


def tiny_network():
    from src_core import NetworkConfig, build_network

    return build_network(NetworkConfig(scales=2, input_channels=4, down_channels=8, up_channels=8,
                                       skip_channels=2), output_channels=1)


def test_compile_falls_back_to_eager_when_unavailable(tiny, small_image, monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    fin = DIPRun(small_image[None], None, tiny(iterations=4, compile="on")).run()
    assert fin.completed == 4 and fin.history.fast_path["compile"] is False
    assert any("torch.compile unavailable" in n for n in fin.history.notes)


def test_compile_failing_on_first_call_falls_back_too(tiny, small_image, monkeypatch):
    def lazy_broken_compile(module, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("inductor failed")
        return call

    monkeypatch.setattr(torch, "compile", lazy_broken_compile)
    fin = DIPRun(small_image[None], None, tiny(iterations=4, compile="on")).run()
    assert fin.completed == 4 and "inductor failed" in " ".join(fin.history.notes)


@pytest.mark.parametrize("mode, expected", [("on", None), ("reduce-overhead", "reduce-overhead"),
                                            ("max-autotune", "max-autotune")])
def test_compile_modes_reach_torch_compile(tiny, small_image, monkeypatch, mode, expected):
    seen = {}

    def recording_compile(module, mode=None):
        seen["mode"] = mode
        return module

    monkeypatch.setattr(torch, "compile", recording_compile)
    fin = DIPRun(small_image[None], None, tiny(iterations=2, compile=mode)).run()
    assert seen == {"mode": expected}
    assert fin.history.fast_path["compile"] == ("default" if mode == "on" else mode)
    assert fin.history.fast_path["cuda_graph"] is False


def test_step_graph_is_cuda_only_and_adam_only(tiny, small_image):
    """'graph' records the step as a CUDA graph: asked for elsewhere, it is refused up front."""
    with pytest.raises(DIPError, match="compile='graph' needs a CUDA device"):
        DIPRun(small_image[None], None, tiny(iterations=2, compile="graph"))
    cuda = torch.device("cuda")
    assert speed.resolve_graph("auto", cuda, "adam", torch.bfloat16) is True
    assert speed.resolve_graph("auto", cuda, "lbfgs", torch.bfloat16) is False  # several passes a step
    assert speed.resolve_graph("auto", cuda, "adam", torch.float16) is False   # the loss scaler
    assert speed.resolve_graph("off", cuda, "adam", None) is False
    assert speed.resolve_graph("auto", torch.device("cpu"), "adam", None) is False
    with pytest.raises(DIPError, match="optimizer='adam'"):
        speed.resolve_graph("graph", cuda, "lbfgs", None)
    fin = DIPRun(small_image[None], None, tiny(iterations=2)).run()
    assert fin.history.fast_path["cuda_graph"] is False  # "auto" on a CPU: eager


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_batched_run_equals_sequential_runs_with_the_same_seeds(tiny, small_image, strategy):
    from src_core import DIPEnsemble

    images = np.stack([small_image[None], small_image.T[::-1][None].copy()])
    masks = np.stack([bernoulli_mask((32, 32), 0.5, s)[None] for s in (0, 1)])
    cfg = tiny(iterations=4, precision="float32", memory_format="contiguous", guard_every=2)
    batch = DIPEnsemble(images, masks, cfg, references=images, seeds=[3, 9], strategy=strategy).run()
    assert batch.histories[0].fast_path["batch_strategy"] == strategy
    for i, seed in enumerate([3, 9]):
        single = DIPRun(images[i], masks[i], cfg.replace(seed=seed), reference=images[i]).run()
        np.testing.assert_allclose(batch.outputs[i], single.output, atol=1e-4)  # float drift only
        np.testing.assert_allclose(batch.histories[i].loss, single.history.loss, rtol=1e-3)
    assert batch.average is not None and batch.average.shape == (1, 32, 32)


def test_batched_restarts_are_averaged(tiny, small_image):
    from src_core import DIPEnsemble

    images = np.repeat(small_image[None, None], 3, axis=0)
    fin = DIPEnsemble(images, bernoulli_mask((32, 32), 0.5, 0), tiny(iterations=6),
                   references=images).run()
    assert fin.outputs.shape == (3, 1, 32, 32)
    assert not np.allclose(fin.outputs[0], fin.outputs[1])  # different seeds, different fits
    np.testing.assert_allclose(fin.average, fin.outputs.mean(axis=0), atol=1e-6)
    assert fin.average_psnr is not None


def test_batched_guard_restores_only_the_member_that_blew_up(tiny, small_image):
    from src_core import DIPEnsemble

    images = np.repeat(small_image[None, None], 2, axis=0)
    run = DIPEnsemble(images, None, tiny(iterations=30, guard_every=5, sigma_p=0.0))
    recoveries = []
    for event in run:
        if event.kind == "progress" and event.iteration == 15:
            with torch.no_grad():
                for p in run_params(run):
                    p[1].mul_(-40.0)
        if event.kind == "recovery":
            recoveries.append(event.member)
    assert recoveries == [1]


def run_params(run):
    return run.fit.members.params


def test_memory_need_is_checked_before_starting(tiny, monkeypatch):
    from src_core import preset, speed

    monkeypatch.setattr(speed, "available_memory", lambda device: 8 * 2**30)
    big = np.zeros((1, 2048, 2048), np.float32)
    with pytest.raises(DIPError,
                       match=r"2048x2048 run in (float32|bfloat16) needs about \d+\.\d GiB but cpu has 8\.0 GiB"):
        DIPRun(big, None, preset("table1", device="cpu", precision="float32"))


def test_freed_memory_is_reused_during_a_run_and_defaults_return_after(tiny, small_image, monkeypatch):
    from src_core import speed

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(speed, "_glibc", lambda: FakeLibc())
    run = DIPRun(small_image[None], None, tiny(iterations=4, report_every=2))
    next(run)
    assert calls[0] == (speed._M_MMAP_MAX, 0)  # on while computing ...
    assert calls[-1] == (speed._M_MMAP_MAX, 65536)  # ... large blocks mmapped again while suspended
    assert ("trim", 0) not in calls  # the run's own heap stays warm
    assert run.run().history.fast_path["reuse_freed_memory"] is True
    assert calls.count((speed._M_MMAP_MAX, 0)) >= 2  # on again after each event
    assert calls[-1] == ("trim", 0) and (speed._M_TRIM_THRESHOLD, 128 * 1024) in calls  # defaults back
    assert speed._allocator_users == 0


@pytest.mark.parametrize("forced, expected", [("0", None), ("1", torch.bfloat16)])
def test_auto_precision_on_the_cpu_can_be_resolved_as_on_the_other_kind_of_cpu(monkeypatch, forced, expected):
    """DIP_CPU_BF16 decides what precision="auto" means on the CPU (the suite runs both ways), and
    what resolves is what runs: the history records it."""
    monkeypatch.setenv(speed.CPU_BF16_ENV, forced)
    cpu = torch.device("cpu")
    assert speed.resolve_precision("auto", cpu) is expected
    assert speed.resolve_precision("float32", cpu) is None  # an explicit choice is not overridden
    assert speed.resolve_memory_format("auto", cpu, expected) == (
        torch.contiguous_format if expected is None else torch.channels_last)


def test_a_bad_cpu_bf16_override_is_refused(monkeypatch):
    monkeypatch.setenv(speed.CPU_BF16_ENV, "yes")
    with pytest.raises(DIPError, match="DIP_CPU_BF16 must be 0 or 1"):
        speed.resolve_precision("auto", torch.device("cpu"))
