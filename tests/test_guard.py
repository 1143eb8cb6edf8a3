"""The destabilisation guard never hands back something worse than its last good check.

Issue 9, item 1: before, restoring the weights left Adam's moments NaN (the next
step poisoned them again), a blow-up before the first check became the baseline, a
fall split over two checks was missed, and a fall at the very end was the answer.
"""

import math

import numpy as np
import pytest
import torch

from src_core import DIPError, DIPRun, Finished, Progress, Recovery
from src_core.engine.guard import Guard
from src_core.engine.members import Members
from src_core.engine.metrics import psnr_from_mse


def _run(run, at=None, wreck=None):
    """Run to the end, calling ``wreck(network)`` at the progress event of iteration ``at``."""
    events = []
    for event in run:
        events.append(event)
        if at is not None and isinstance(event, Progress) and event.iteration == at:
            with torch.no_grad():
                wreck(run.network)
    return events


def _nan(network):
    for p in network.parameters():
        p.fill_(float("nan"))


def _blow_up(network):
    for p in network.parameters():
        p.mul_(-40.0).add_(torch.randn_like(p) * 10)


def _fits(events):
    return {e.iteration: e.fit_psnr[0] if isinstance(e.fit_psnr, list) else e.fit_psnr
            for e in events if isinstance(e, Progress) and e.fit_psnr is not None}


def test_nan_weights_are_recovered_with_the_optimiser_state(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=40, guard_every=5, report_every=5, sigma_p=0.0))
    events = _run(run, at=20, wreck=_nan)
    recoveries = [e for e in events if isinstance(e, Recovery)]
    assert [r.iteration for r in recoveries] == [25]          # one fall, not a fall at every check after
    assert math.isnan(recoveries[0].fit_psnr) or not math.isfinite(recoveries[0].fit_psnr)
    fits = _fits(events)
    assert all(math.isfinite(fits[it]) for it in (30, 35, 40))  # Adam's moments were put back too
    assert fits[40] > fits[20] - 1.0
    final = events[-1]
    assert isinstance(final, Finished) and np.isfinite(final.output).all()


def test_nan_before_the_first_check_goes_back_to_the_start(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=30, guard_every=10, report_every=1, sigma_p=0.0))
    events = _run(run, at=2, wreck=_nan)
    assert [e.iteration for e in events if isinstance(e, Recovery)] == [10]
    assert np.isfinite(events[-1].output).all()
    assert math.isfinite(_fits(events)[30])


def _guard_checking(start_db: float):
    """A guard on a tiny network whose fit was ``start_db`` at iteration 1, and a function
    that runs one check with a given fit PSNR (observed fraction 1, so fit = -10 log10 loss)."""
    from conftest import tiny_config

    cfg = tiny_config(guard_drop_db=5.0)
    members = Members(cfg, 1, [0], torch.device("cpu"), torch.contiguous_format, "loop")
    guard = Guard(cfg, members, [1.0])
    optimizer = torch.optim.Adam(members.params, lr=0.01)
    out = torch.rand(1, 1, 8, 8)
    guard.start(out)
    loss_log = torch.tensor([[10 ** (-start_db / 10)]])

    def check(it, fit_db):
        loss = torch.tensor([10 ** (-fit_db / 10)])
        return guard.check(it, loss, optimizer, None, lambda: out, loss_log, out.clone())

    return check


def test_a_fall_spread_over_two_checks_is_caught():
    """39.7 -> 36.1 -> 32.5 dB: each step is under the 5 dB drop, the sum is not."""
    check = _guard_checking(start_db=10.0)
    assert check(50, 39.7) == []
    assert check(100, 36.1) == []      # 3.6 dB below: within the drop
    fallen = check(150, 32.5)          # 7.2 dB below the best
    assert [(i, round(best, 1)) for i, _, best in fallen] == [(0, 39.7)]


def test_a_blow_up_before_the_first_check_is_not_the_baseline():
    check = _guard_checking(start_db=12.0)
    assert [i for i, _, _ in check(50, 3.0)] == [0]   # 3 dB at the first check: 9 dB below the start


def test_a_blow_up_after_the_last_check_is_not_the_answer(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=23, guard_every=5, report_every=1,
                                               snapshot_every=5, sigma_p=0.0))
    events = _run(run, at=21, wreck=_blow_up)
    final = events[-1]
    good = next(e for e in events if isinstance(e, Progress) and e.iteration == 20)
    assert final.history.answer_iteration == 20
    assert any("fell at the end" in n for n in final.history.notes)
    fits = _fits(events)
    assert fits[23] < fits[20] - 5                          # the last iterate did fall
    # the answer is the output of the last good check, not the wrecked last iterate
    np.testing.assert_allclose(final.output, good.output, atol=1e-6)


def test_a_recovery_at_the_last_iteration_returns_the_good_estimate(tiny, small_image):
    cfg = tiny(iterations=25, guard_every=5, report_every=5, snapshot_every=5, sigma_p=0.0)
    run = DIPRun(small_image[None], None, cfg)
    events = _run(run, at=20, wreck=_blow_up)
    assert [e.iteration for e in events if isinstance(e, Recovery)] == [25]
    at20 = next(e for e in events if isinstance(e, Progress) and e.iteration == 20)
    np.testing.assert_allclose(events[-1].output, at20.output, atol=1e-6)


def test_a_learning_rate_that_always_diverges_is_refused_with_advice(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=200, guard_every=5, lr=10.0, sigma_p=0.0))
    events = []
    from src_core.errors import Diverged

    with pytest.raises(Diverged, match=r"lr=10 is too high .*; try lr=0.01 or lower"):
        for event in run:
            events.append(event)
    assert len([e for e in events if isinstance(e, Recovery)]) == Guard.MAX_FALLS


def test_without_the_guard_a_non_finite_output_is_an_error_not_zeros(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=12, guard=False, report_every=5, sigma_p=0.0))
    with pytest.raises(DIPError, match="diverged.*not finite"):
        _run(run, at=5, wreck=_nan)


def test_psnr_of_a_nan_loss_is_not_a_number():
    assert not math.isfinite(psnr_from_mse(float("nan")))


def test_damped_restore_clears_the_momentum_and_keeps_the_larger_second_moments():
    """guard_restore="damped": the weights of the last good check, Adam's first moment
    cleared, its second the larger of saved and current (a non-finite one dropped)."""
    from conftest import tiny_config

    cfg = tiny_config(guard_restore="damped")
    members = Members(cfg, 1, [0], torch.device("cpu"), torch.contiguous_format, "loop")
    guard = Guard(cfg, members, [1.0])
    optimizer = torch.optim.Adam(members.params, lr=0.01)
    z = torch.rand(1, cfg.network.input_channels, 16, 16)
    members.forward(z).square().mean().backward()
    optimizer.step()
    out = torch.rand(1, 1, 16, 16)
    guard.start(out)
    loss_log = torch.tensor([[0.1]])  # 10 dB at iteration 1

    def check(it, fit_db):
        return guard.check(it, torch.tensor([10 ** (-fit_db / 10)]), optimizer, None, lambda: out,
                           loss_log, out.clone())

    assert check(50, 30.0) == []  # a good check: weights and moments saved
    good = [p.detach().clone() for p in members.params]
    saved_sq = [optimizer.state[p]["exp_avg_sq"].clone() for p in members.params]
    with torch.no_grad():  # the fall: wild weights, huge second moments, one NaN
        for p in members.params:
            p.mul_(-40.0)
            optimizer.state[p]["exp_avg"].fill_(3.0)
            optimizer.state[p]["exp_avg_sq"].mul_(1e6)
        first = members.params[0]
        optimizer.state[first]["exp_avg_sq"].view(-1)[0] = float("nan")
    assert [i for i, _, _ in check(100, 12.0)] == [0]
    for p, w, sq in zip(members.params, good, saved_sq):
        assert torch.equal(p, w)
        assert torch.count_nonzero(optimizer.state[p]["exp_avg"]) == 0
        now = optimizer.state[p]["exp_avg_sq"]
        assert torch.isfinite(now).all() and (now >= sq).all()
    assert optimizer.state[first]["exp_avg_sq"].view(-1)[0] == saved_sq[0].view(-1)[0]
    # the next step (zero gradient, as after every put-back) does not move the weights
    for p in members.params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert all(torch.equal(p, w) for p, w in zip(members.params, good))


def test_damped_restore_recovers_a_run_from_nan_weights(tiny, small_image):
    run = DIPRun(small_image[None], None, tiny(iterations=40, guard_every=5, report_every=5, sigma_p=0.0,
                                               guard_restore="damped"))
    events = _run(run, at=20, wreck=_nan)
    assert [e.iteration for e in events if isinstance(e, Recovery)] == [25]
    fits = _fits(events)
    assert all(math.isfinite(fits[it]) for it in (30, 35, 40))
    assert np.isfinite(events[-1].output).all()


def test_guard_restore_enters_the_saved_settings_only_when_not_the_default(tiny):
    from src_core import RunConfig

    assert "guard_restore" not in tiny().to_dict()  # folders made before it keep their fingerprint
    damped = tiny(guard_restore="damped")
    assert damped.to_dict()["guard_restore"] == "damped"
    assert RunConfig.from_dict(damped.to_dict()).guard_restore == "damped"
