"""The default run fits the user's time: the count (and the cpu network's width) from the
measured step time; a count or a preset the user names is theirs."""

import numpy as np
import pytest

import src_core
from src_core import budget, timing
from src_core.errors import DIPError

IMAGE = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)


@pytest.fixture
def step(monkeypatch):
    """A machine where an iteration of a 32-channel network costs ``step["wide"]`` seconds and
    of a 16-channel one ``step["narrow"]``, setting up 1 s, and the classical answer nothing."""
    costs = {"wide": 0.1, "narrow": 0.025}

    def step_time(config, *args, **kwargs):
        width = config.network.width()
        return timing.StepTime(costs["wide"] if width > 16 else costs["narrow"], 1.0, True)

    monkeypatch.setattr(timing, "step_time", step_time)
    monkeypatch.setattr(timing, "classical_seconds", lambda *a, **k: 0.0)
    return costs


@pytest.mark.parametrize("text,seconds", [(30, 30.0), ("90s", 90.0), ("2min", 120.0), ("1.5 h", 5400.0),
                                          ("45", 45.0)])
def test_a_budget_is_read_as_seconds(text, seconds):
    assert budget.parse_budget(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-5s", 0, True, float("nan"), "5 days"])
def test_a_budget_that_is_not_a_time_is_refused_clearly(bad):
    with pytest.raises(DIPError, match="budget"):
        budget.parse_budget(bad)


def test_the_default_run_spends_the_budget_on_iterations(step):
    problem = src_core.prepare(IMAGE, task="random", device="cpu", budget=60)
    assert problem.config.iterations == 590  # (60 s - 1 s setup) / 0.1 s
    assert problem.config.network.width() == 32 and problem.budget.narrowed is False
    assert any(n.startswith("budget: 590 iterations fit about 60 s") for n in problem.notes)
    assert "give iterations=" in problem.budget.note()
    estimate = problem.estimate()  # it times the classical answers for real (here 0 was assumed)
    assert estimate.total_s - estimate.classical_s == pytest.approx(60, abs=0.11)


def test_with_no_preset_and_no_count_the_default_budget_applies(step):
    problem = src_core.prepare(IMAGE, task="random", device="cpu")
    assert problem.budget is not None and problem.budget.budget_s == budget.DEFAULT_BUDGET_S
    assert problem.config.iterations == min(4 * 800, int((budget.DEFAULT_BUDGET_S - 1) / 0.1))


def test_too_few_iterations_of_the_wide_network_choose_the_narrow_one(step):
    step["wide"] = 0.5  # 118 iterations in 60 s
    problem = src_core.prepare(IMAGE, task="random", device="cpu", budget=60)
    net = problem.config.network.validate()
    assert problem.budget.narrowed and problem.config.iterations == 2360  # 59 / 0.025
    assert net.down_channels == net.up_channels == net.skip_channels == [16] * 4
    assert "16-channel network" in problem.budget.note()


def test_the_count_is_capped_and_floored(step):
    step["wide"] = 1e-4
    capped = src_core.prepare(IMAGE, task="random", device="cpu", budget=60)
    assert capped.config.iterations == 4 * 800 and capped.budget.capped
    # it says the run takes less than the budget, not that it fits it
    assert ("3200 iterations (4 x the preset's, the most a budget gives) take about 0 s of the 60 s"
            in capped.budget.note())
    step["wide"] = step["narrow"] = 10.0
    problem = src_core.prepare(IMAGE, task="random", device="cpu", budget=60)
    assert problem.config.iterations == budget.MIN_ITERATIONS
    assert "take longer than the budget" in problem.budget.note()


def test_a_count_or_a_named_preset_is_the_users(step):
    given = src_core.prepare(IMAGE, task="random", device="cpu", iterations=7)
    assert given.config.iterations == 7 and given.budget is None
    named = src_core.prepare(IMAGE, task="random", device="cpu", preset="cpu")
    assert named.config.iterations == 800 and named.budget is None
    with pytest.raises(DIPError, match="give iterations or a budget, not both"):
        src_core.prepare(IMAGE, task="random", device="cpu", iterations=7, budget=60)


def test_a_budget_keeps_a_network_the_user_set(step):
    step["wide"] = 0.5
    own = src_core.prepare(IMAGE, task="random", device="cpu", scales=3, budget=60)
    assert own.config.network.scales == 3 and own.config.network.width() == 32 and not own.budget.narrowed
    paper = src_core.prepare(IMAGE, task="random", device="cpu", preset="table1", budget=60)
    assert paper.config.network.to_dict() == src_core.preset("table1").network.to_dict()
    assert paper.config.iterations == 118 and paper.config.lr == 0.001


def test_the_chosen_count_is_recorded_so_the_saved_settings_repeat_the_run(step):
    step["wide"] = 0.5
    result = src_core.restore(IMAGE[:32, :32], task="random", device="cpu", budget=2, report_every=25)
    assert result.config.iterations == budget.MIN_ITERATIONS == len(result.history.loss)
    again = src_core.prepare(IMAGE[:32, :32], task="random", config=result.config.to_dict())
    assert again.budget is None and again.config == result.config


def test_the_same_machine_chooses_the_same_count_again():
    """A resumed run prepares again: from the kept calibration it must choose the same count,
    or its checkpoint (made for those settings) would be refused."""
    first = src_core.prepare(IMAGE, task="random", device="cpu", threads=1, budget=20)
    again = src_core.prepare(IMAGE, task="random", device="cpu", threads=1, budget=20)
    assert first.budget.step_s > 0 and again.config == first.config
    assert again.fingerprint() == first.fingerprint()
