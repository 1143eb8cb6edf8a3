"""A default run that fits the user's time: the iteration count (and, for the ``cpu`` preset, the
network's width) chosen from this machine's measured speed (:mod:`src_core.timing`).

A fixed count is wrong at every size but one: the ``cpu`` preset's 800 iterations take about
a minute on a 128x128 image on one core and over 16 minutes on a 512x512 RGB photograph.  With
no iteration count given, :func:`fit` spends about :data:`DEFAULT_BUDGET_S` per image (each
slice of a stack, a warm-started slice a share of it; a tiled image's tiles together): the
count is what the budget leaves after setting up and the classical answer, at the calibrated
seconds per iteration.
Where the ``cpu`` network would get fewer than :data:`MIN_USEFUL_ITERATIONS`, its half-width
variant (16 channels) is used instead: at a quarter of the budget it was the better of the two
(docs/results/time_to_quality: +0.29 dB at a quarter of the time), and a DIP fit of a hundred
steps is mostly the classical answer.  The count is recorded in the run's configuration, so
the saved settings repeat the run exactly on any machine.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import DIPError

#: the time a default run spends on one image here (seconds): "about 2 minutes"
DEFAULT_BUDGET_S = 120.0
#: below this count the cpu network's fit has barely started: its narrower variant is tried
MIN_USEFUL_ITERATIONS = 300
#: a run makes at least this many steps, even when the budget leaves fewer
MIN_ITERATIONS = 50
#: at most this many times the preset's count (a small image would get tens of thousands)
MAX_FACTOR = 4
#: the narrower network for large images under the budget
NARROW_CHANNELS = 16


@dataclass(frozen=True)
class Fitted:
    """The configuration that fits the budget, and what to tell the user about it."""

    config: object            # the RunConfig with the chosen count (and network)
    budget_s: float
    step_s: float             # seconds per iteration, as the choice measured them
    narrowed: bool            # the narrower network was chosen
    preset_s: float           # what the preset's own count and network would have taken
    observed_hw: tuple        # the image size it was fitted for
    capped: bool = False      # the count is MAX_FACTOR x the preset's: it takes less than the budget

    def describe(self) -> str:
        """'310 iterations fit about 2 min here (...)': what was chosen, and why."""
        net = (f" of a {NARROW_CHANNELS}-channel network (the preset's wider one would get fewer "
               f"than {MIN_USEFUL_ITERATIONS})" if self.narrowed else "")
        spent = self.config.iterations * self.step_s
        short = spent > 1.25 * self.budget_s
        if self.capped and spent < 0.8 * self.budget_s:
            fits = (f"({MAX_FACTOR} x the preset's, the most a budget gives) take about "
                    f"{describe_seconds(spent)} of the {describe_seconds(self.budget_s)}")
        elif short:
            fits = f"(the least a run makes) take longer than the budget of {describe_seconds(self.budget_s)}"
        else:
            fits = f"fit about {describe_seconds(self.budget_s)}"
        return (f"{self.config.iterations} iterations{net} {fits} here ({self.step_s:.3g} s/it; "
                f"the preset as it stands would take {describe_seconds(self.preset_s)})")

    def note(self) -> str:
        """The run's note (the CLI says it before the run, in its own words)."""
        return (f"budget: {self.describe()}; for more, give iterations= or a longer budget= "
                "(CLI: --iterations N, --budget 10min)")


def requested_seconds(budget, overrides: dict, default_run: bool, preset_name: str) -> float | None:
    """The seconds a run's count is fitted to: ``budget`` as given (never with an iteration count),
    or :data:`DEFAULT_BUDGET_S` for a default run (no preset or configuration named, no count)
    of the ``cpu`` preset; None: the count is the one set.  The rule prepare() and napari's
    console call share."""
    seconds = parse_budget(budget)
    if seconds is not None and "iterations" in overrides:
        raise DIPError("give iterations or a budget, not both: a budget chooses the iteration count.")
    if seconds is None and default_run and "iterations" not in overrides and preset_name == "cpu":
        return DEFAULT_BUDGET_S
    return seconds


def parse_budget(value) -> float | None:
    """Seconds from 120, "90s", "2min", "1.5 h" (None stays None), checked."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DIPError(f"budget is a time: seconds, or a text like '90s', '5min', '1h' (got {value!r}).")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|min|m|h)?\s*", str(value))
        if match is None:
            raise DIPError(f"budget is a time: seconds, or a text like '90s', '5min', '1h' (got {value!r}).")
        seconds = float(match.group(1)) * {"s": 1, "sec": 1, None: 1, "min": 60, "m": 60, "h": 3600}[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise DIPError(f"budget must be a positive time (got {value!r}).")
    return seconds


def describe_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


def narrow(network):
    """The network at NARROW_CHANNELS channels (its skips too: the variant measured), or None
    where it is no wider than that."""
    if network.width() <= NARROW_CHANNELS:
        return None
    out = network.with_width(NARROW_CHANNELS)
    skips = getattr(out, "skip_channels", None)
    if skips is not None:
        out.skip_channels = ([min(c, NARROW_CHANNELS) for c in skips] if isinstance(skips, (list, tuple))
                             else min(skips, NARROW_CHANNELS))
    return out


def is_cpu_network(config) -> bool:
    """Whether ``config`` runs the ``cpu`` preset's network as the preset has it (the one whose
    width the budget may choose; a network the user set is theirs)."""
    from .config import PRESETS

    return config.network.to_dict() == PRESETS["cpu"].config.network.to_dict()


def fit(config, channels: int, observed_hw: tuple, *, budget_s: float = DEFAULT_BUDGET_S, operator=None,
        threads: int | None = None, classical_s: float = 0.0, choose_network: bool = False,
        window: bool = False, measure: bool = True, context: str | None = None) -> Fitted:
    """The count (and with ``choose_network`` the network) that fits ``budget_s`` for one image.

    ``classical_s``: the classical answers' time for one image; ``measure``: calibrate here
    what is not measured yet (a second or two each); otherwise the cost model's prior decides.
    """
    from . import timing

    def count(cfg):
        step = timing.step_time(cfg, channels, observed_hw, operator=operator, threads=threads,
                                window=window, measure=measure)
        per_step = step.step_s * (timing.context_factor(context) if step.measured else 1.0)
        left = budget_s - step.setup_s - classical_s
        return int(left / per_step + 1e-9) if left > 0 else 0, per_step, step.setup_s

    most = MAX_FACTOR * config.iterations
    n, step_s, setup_s = count(config)
    preset_s = setup_s + config.iterations * step_s + classical_s
    narrowed = False
    cheaper = narrow(config.network) if choose_network and n < MIN_USEFUL_ITERATIONS else None
    if cheaper is not None:
        candidate = config.replace(network=cheaper)
        n2, step2, _ = count(candidate)
        if n2 > n:
            config, n, step_s, narrowed = candidate, n2, step2, True
    iterations = int(min(most, max(MIN_ITERATIONS, n)))
    return Fitted(config.replace(iterations=iterations).validate(), float(budget_s), step_s, narrowed, preset_s,
                  tuple(int(n) for n in observed_hw), capped=iterations == most and n > most)


def fit_run(config, task, channels: int, observed_hw: tuple, *, budget_s: float = DEFAULT_BUDGET_S,
            operator=None, threads: int | None = None, classical="auto", blends: bool = True,
            window: bool = False, measure: bool = True, context: str | None = None) -> Fitted:
    """:func:`fit` for a run of ``task`` (a name or a :class:`src_core.tasks.Task`): the budget
    pays for its classical answer too (twice where the answer blends: from the fitted pixels
    as well), as timed here on holes like the task's; the width is chosen only for the ``cpu``
    preset's own network.  The one rule the API, the command line and napari share."""
    from . import timing
    from .operators import Identity
    from .tasks import get_task

    spec = get_task(task) if isinstance(task, str) else task
    operator = operator or Identity()
    method = spec.classical if classical == "auto" else classical
    each = timing.classical_seconds(method, channels, observed_hw, operator=operator,
                                    holes=timing.holes_of(spec.mask), measure=measure)
    twice = blends and method is not None and operator.factor == 1
    return fit(config, channels, observed_hw, budget_s=budget_s, operator=operator, threads=threads,
               classical_s=each * (2 if twice else 1), choose_network=is_cpu_network(config),
               window=window, measure=measure, context=context)
