"""How long a run takes on this machine, told before it starts: measured here, not assumed.

What a step of the network costs grows with the image and the network as its FLOPs and
activations do (a shape-only pass, :func:`src_core.speed.network_cost`), but what one FLOP
costs differs between machines by 2x and more (float32 on AVX2 against bf16 on AVX512-BF16,
one core against two), so a model fitted on one machine is wrong on the next.  The rate
therefore comes from a short *calibration*: the run's own network, precision, layout,
operator and thread count, stepped a few times on this machine on data of the run's size
(or, for a step longer than :data:`CALIBRATION_STEP_S`, of a smaller size, scaled up by
the cost model).  Each calibration is kept per machine and settings, in memory and in
``timing.json`` in the user's cache folder (``DIP_CACHE_DIR``, else
``$XDG_CACHE_HOME/napari-dip``, else ``~/.cache/napari-dip``), so it is paid once.

A run's time is then, per slice or tile: setting up (building the network, the first
steps' kernel choices), the iterations at the measured rate, and the classical answer
(measured on the run's own data where the caller has it, :meth:`src_core.Problem.estimate`).
With early stopping the count is the most the run can take: the estimate is an upper bound.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DIPError
from . import speed

#: a calibration steps the network at a size whose step takes about this long (at most)
CALIBRATION_STEP_S = 0.15
#: and times steps for about this long after its warm-up ones (at least MIN_TIMED of them)
CALIBRATION_TIMED_S = 1.0
WARMUP_STEPS, MIN_TIMED, MAX_TIMED = 3, 5, 60
#: a run estimated longer than this on a CPU is announced with a warning
LONG_RUN_S = 15 * 60

# The cost model's prior rates, used to choose the calibration's size, to scale it to the
# run's size, and as the estimate before a calibration is at hand: a float32 step on a 2-core
# AMD EPYC with AVX2 (convolution FLOPs and activation elements per second per thread, fitted to
# the cpu preset at 128 and 256 and the standard net at 128), and an H100 with the step graph
# (13.0 ms at 512x512, 5.0 ms at 256x256: about 40 TFLOP/s plus 2 ms).  docs/benchmarks.md.
CPU_FLOPS_PER_THREAD = 67e9
CPU_ELEMENTS_PER_THREAD = 1.3e9
CUDA_FLOPS = 40e12


@dataclass(frozen=True)
class StepTime:
    """What one run of a network costs here: seconds per iteration and seconds to set up."""

    step_s: float        # one iteration at the run's size
    setup_s: float       # building the network and the first steps' extra (once per run)
    measured: bool       # from a calibration on this machine (False: the prior cost model)
    calibrated_at: tuple | None = None   # the (H, W) observation the calibration ran at


def modelled_step(network_config, channels: int, padded: tuple, device: torch.device,
                  threads: int | None) -> float:
    """The prior's seconds per iteration (forward and backward) on ``padded``."""
    cost = speed.network_cost(network_config, channels, padded)
    flops = 3 * cost["forward_flops"]
    if device.type == "cuda":
        return flops / CUDA_FLOPS + 2e-3
    scale = min(threads or 1, speed.usable_cores()) ** 0.75  # two threads measured 1.6-1.8x one
    return (flops / CPU_FLOPS_PER_THREAD + 3 * cost["activation_elements"] / CPU_ELEMENTS_PER_THREAD) / scale


def padded_output(config, operator, observed_hw: tuple) -> tuple:
    """The network's output grid for an observation of ``observed_hw`` (the answer plus the
    operator's margin, padded to a multiple of 2**scales): what a step costs is of this size."""
    from .operators import padded_grid

    return padded_grid(tuple(observed_hw), operator.factor, operator.margin, config.network.multiple()).output


# ----------------------------------------------------------------------------- the cache

def cache_dir() -> Path:
    explicit = os.environ.get("DIP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-dip"


@functools.lru_cache(maxsize=1)
def machine() -> str:
    """What a calibration holds for: the processor, its usable cores, torch, and what
    ``precision="auto"`` resolves to here (DIP_CPU_BF16 counts)."""
    return f"{speed.cpu_name()}|{speed.usable_cores()} cores|torch {torch.__version__}"


_lock = threading.Lock()
_memory: dict[str, dict] = {}
_loaded_from: Path | None = None


def _cache_file() -> Path:
    return cache_dir() / "timing.json"


def _load() -> dict:
    """The calibrations on disk, read once per cache folder (a damaged file counts as empty)."""
    global _loaded_from
    path = _cache_file()
    if _loaded_from != path:
        _memory.clear()
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                _memory.update({k: v for k, v in data.items() if isinstance(v, dict)})
        except (OSError, ValueError):
            pass
        _loaded_from = path
    return _memory


def _store(key: str, entry: dict) -> None:
    """Keep a calibration, in memory and (atomically) on disk; a folder that cannot be
    written only costs the next process its own calibration."""
    with _lock:
        entries = _load()
        entries[key] = entry
        path = _cache_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".timing-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump(entries, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            pass


def _key(config, channels, observed_hw, operator, device, threads, window: bool) -> str:
    from .operators import fingerprint_terms

    amp = speed.resolve_precision(config.precision, device)
    fmt = speed.resolve_memory_format(config.memory_format, device, amp)
    what = {"machine": machine(), "device": str(device), "threads": threads,
            "network": config.network.to_dict(), "channels": int(channels), "size": list(observed_hw),
            "precision": str(amp), "memory_format": str(fmt), "compile": config.compile,
            "optimizer": config.optimizer, "ema": config.ema > 0, "sigma_p": config.sigma_p > 0,
            "guard": config.guard, "window": window,
            "operator": json.dumps(fingerprint_terms(operator), default=str)[:2000]}
    return json.dumps(what, sort_keys=True, default=str)


# ----------------------------------------------------------------------------- calibration

def calibration_size(config, channels, observed_hw, operator, device, threads) -> tuple:
    """The observation size a calibration steps at: the run's own, or a smaller one of about
    the same shape when the prior says a step there takes over CALIBRATION_STEP_S."""
    full = modelled_step(config.network, channels, padded_output(config, operator, observed_hw), device, threads)
    if full <= CALIBRATION_STEP_S:
        return tuple(observed_hw)
    shrink = math.sqrt(CALIBRATION_STEP_S / full)
    least = -(-config.network.min_size() // operator.factor)
    return tuple(max(least, min(int(n), int(n * shrink))) for n in observed_hw)


def step_time(config, channels: int, observed_hw: tuple, *, operator=None, threads: int | None = None,
              window: bool = False, measure: bool = True) -> StepTime:
    """Seconds per iteration and to set up, for a run of ``config`` on a ``channels`` x
    ``observed_hw`` observation through ``operator`` with ``threads`` CPU threads.

    ``window``: the run keeps ES-WMV's window (early stopping without held-out pixels).
    ``measure``: calibrate here when this machine has no calibration for these settings yet
    (about a second); otherwise the cost model's prior answers (``measured`` False).
    """
    from .devices import resolve_device
    from .operators import Identity

    operator = operator or Identity()
    device = resolve_device(config.device)
    threads = speed.resolve_threads(threads, device)
    observed_hw = tuple(int(n) for n in observed_hw)
    at = calibration_size(config, channels, observed_hw, operator, device, threads)
    key = _key(config, channels, at, operator, device, threads, window)
    with _lock:
        entry = _load().get(key)
    if entry is None and measure:
        entry = _calibrate(config, channels, at, operator, threads, window)
        if entry is not None:
            _store(key, entry)
    full = padded_output(config, operator, observed_hw)
    prior = modelled_step(config.network, channels, full, device, threads)
    k = config.restarts  # restarts step member by member on a CPU (and gained nothing batched on a GPU)
    if entry is None:
        return StepTime(k * prior, 0.0, False)
    scale = prior / modelled_step(config.network, channels, padded_output(config, operator, at), device, threads)
    return StepTime(k * entry["step_s"] * scale, entry["setup_s"], True, at)


def _calibrate(config, channels, observed_hw, operator, threads, window) -> dict | None:
    """Step the run's network on random data of ``observed_hw``: the warm-up steps, then
    steps until about CALIBRATION_TIMED_S have passed.  None where the run cannot be made
    (the engine refuses it: the caller's own checks say why)."""
    from .engine import DIPRun

    cfg = config.replace(iterations=WARMUP_STEPS + MAX_TIMED, report_every=1, snapshot_every=0, restarts=1,
                         early_stop=window, es_patience=10**6, compute_ssim=False)
    rng = np.random.default_rng(0)
    image = rng.random((channels, *observed_hw), dtype=np.float32)
    started = time.perf_counter()
    try:
        run = DIPRun(image, None, cfg, threads=threads, operator=operator)
    except DIPError:
        return None
    marks, last = [], started
    try:
        for event in run:
            if event.kind != "progress":
                continue
            marks.append(event.elapsed)  # seconds since the network was set up
            last = time.perf_counter()
            if len(marks) - WARMUP_STEPS >= MIN_TIMED and marks[-1] - marks[WARMUP_STEPS - 1] >= CALIBRATION_TIMED_S:
                break
    finally:
        run.close()
    timed = len(marks) - WARMUP_STEPS
    if timed < 1:
        return None
    # a trimmed mean: a shared machine's hiccups move a plain mean of a dozen steps, and its
    # slow and fast spells (steps of 42 and 58 ms alternating here) a median
    steps = np.sort(np.diff(marks[WARMUP_STEPS - 1:]))
    cut = len(steps) // 10
    step = float(steps[cut:len(steps) - cut].mean())
    # setting up: the checks, building the network and its state, and the warm-up steps'
    # time beyond their share (the first steps choose kernels and fault memory in)
    setup = (last - started - marks[-1]) + max(0.0, marks[WARMUP_STEPS - 1] - WARMUP_STEPS * step)
    return {"step_s": step, "setup_s": setup, "timed_steps": timed, "measured_on": time.strftime("%Y-%m-%d")}


# ----------------------------------------------------------------------------- the classical answer

#: a classical method is timed on at most this many pixels, and its time scaled by the pixel count
CLASSICAL_PIXELS = 256 * 256


def holes_of(mask_kind: str) -> str:
    """The holes a task's mask makes (``Task.mask``), in :func:`classical_seconds`' terms."""
    return {"required": "strokes", "random": "random"}.get(mask_kind, "none")


def classical_seconds(method: str | None, channels: int, observed_hw: tuple, *, operator=None,
                      holes: str = "none", measure: bool = True) -> float:
    """About how long ``method`` takes on a ``channels`` x ``observed_hw`` observation here,
    timed once per machine and size on random data with ``holes`` "none", "strokes" (a few
    long ones, as painted) or "random" (scattered pixels, half of them): biharmonic's time
    differs tenfold between the last two.  Where the run's own data are at hand, :meth:`src_core.Problem.estimate`
    times the method on them instead.  0 for no method, or when not measured yet and
    ``measure`` is False."""
    from .classical import classical_answer
    from .operators import Identity

    if method is None:
        return 0.0
    operator = operator or Identity()
    h, w = (int(n) for n in observed_hw)
    shrink = min(1.0, math.sqrt(CLASSICAL_PIXELS / (h * w)))
    at = (max(8, int(h * shrink)), max(8, int(w * shrink)))
    key = json.dumps({"machine": machine(), "classical": method, "channels": int(channels), "size": at,
                      "holes": holes, "factor": operator.factor}, sort_keys=True)
    with _lock:
        entry = _load().get(key)
    if entry is None:
        if not measure:
            return 0.0
        rng = np.random.default_rng(0)
        image = rng.random((channels, *at), dtype=np.float32)
        mask = np.ones((1, *at), bool)
        if holes == "random":
            mask = rng.random((1, *at)) >= 0.5
        elif holes == "strokes":
            mask[:, ::12, :] = False
        t0 = time.perf_counter()
        try:
            classical_answer(method, image, mask, operator)
        except DIPError:
            return 0.0
        entry = {"seconds": time.perf_counter() - t0, "measured_on": time.strftime("%Y-%m-%d")}
        _store(key, entry)
    return entry["seconds"] * (h * w) / (at[0] * at[1])


# ----------------------------------------------------------------------------- where a run runs

#: the finished runs a context remembers to learn its speed from
CONTEXT_RUNS = 20


def _context_key(context: str) -> str:
    return json.dumps({"machine": machine(), "context": context}, sort_keys=True)


def context_factor(context: str | None) -> float:
    """How much slower than calibrated a run in ``context`` goes here: the median ratio of
    its last CONTEXT_RUNS finished runs (1: as calibrated, or nothing learned yet).  A
    calibration steps the network alone; inside napari the window's own work shares the
    machine, so napari learns its factor from the runs it finished (:func:`learn`).  A
    median, because one run beside a busy neighbour must not move the next estimates much."""
    if context is None:
        return 1.0
    with _lock:
        entry = _load().get(_context_key(context))
    runs = [] if entry is None else [(float(x), float(y)) for x, y in entry.get("runs", [])]
    if not runs:
        return 1.0
    return float(np.clip(np.median([y / x for x, y in runs]), 0.25, 4.0))


def learn(context: str, calibrated_step_s: float, measured_step_s: float) -> float:
    """Remember a finished run's measured seconds per iteration beside its calibrated ones
    (the last CONTEXT_RUNS runs count); returns ``context``'s factor after it."""
    if not (calibrated_step_s > 0 and measured_step_s > 0 and math.isfinite(measured_step_s)
            and math.isfinite(calibrated_step_s)):
        return context_factor(context)
    with _lock:
        entry = _load().get(_context_key(context)) or {}
    runs = (list(entry.get("runs", [])) + [[calibrated_step_s, measured_step_s]])[-CONTEXT_RUNS:]
    _store(_context_key(context), {"runs": runs, "measured_on": time.strftime("%Y-%m-%d")})
    return context_factor(context)


# ----------------------------------------------------------------------------- the estimate

@dataclass
class Estimate:
    """A run's time here, before any work (``total_s``), and what it is made of."""

    s_per_iteration: float
    iterations: int          # over every slice or tile
    total_s: float
    device: str
    threads: int | None
    runs: int = 1            # slices or tiles, each set up once
    setup_s: float = 0.0     # per run
    classical_s: float = 0.0  # over every run
    measured: bool = False
    upper_bound: bool = False  # early stopping may end each run sooner
    calibrated_step_s: float | None = None  # the calibration's s/it, before the context's factor

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """'about 2.1 min (0.16 s/it x 800 it on cpu, 2 threads, measured here)'."""
        when = _duration(self.total_s)
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        how = "measured here" if self.measured else "not measured here yet"
        bound = "at most " if self.upper_bound else "about "
        tail = "; early stopping may end it sooner" if self.upper_bound else ""
        return (f"{bound}{when} ({self.s_per_iteration:.3g} s/it x {self.iterations} it on "
                f"{self.device}{threads}, {how}{tail})")


def _duration(total: float) -> str:
    return (f"{total:.0f} s" if total < 120 else f"{total / 60:.1f} min" if total < 7200
            else f"{total / 3600:.1f} h")


def estimate(config, channels: int, observed_hw: tuple, *, slices: int = 1, operator=None,
             threads: int | None = None, classical_s: float = 0.0, window: bool = False,
             measure: bool = True, context: str | None = None) -> Estimate:
    """How long ``slices`` runs of ``config`` on ``observed_hw`` take here (see the module
    docstring); ``classical_s``: the classical answers' time over all slices, when known;
    ``context``: where the run runs, when that slows it (:func:`context_factor`)."""
    from .devices import resolve_device

    device = resolve_device(config.device)
    threads = speed.resolve_threads(threads, device)
    step = step_time(config, channels, observed_hw, operator=operator, threads=threads, window=window,
                     measure=measure)
    per_step = step.step_s * context_factor(context) if step.measured else step.step_s
    iterations = config.stack_iterations(slices)  # a stack's later slices may start warm
    total = slices * step.setup_s + iterations * per_step + classical_s
    return Estimate(per_step, iterations, total, str(device), threads, slices, step.setup_s,
                    classical_s, step.measured, bool(config.early_stop), step.step_s)


def combine(estimates: list) -> Estimate:
    """One estimate for several runs one after another (the tiles of an image)."""
    first = estimates[0]
    iterations = sum(e.iterations for e in estimates)
    total = sum(e.total_s for e in estimates)
    work = sum(e.s_per_iteration * e.iterations for e in estimates)
    return Estimate(work / iterations if iterations else first.s_per_iteration, iterations, total, first.device,
                    first.threads, sum(e.runs for e in estimates), first.setup_s,
                    sum(e.classical_s for e in estimates), all(e.measured for e in estimates),
                    any(e.upper_bound for e in estimates), first.calibrated_step_s)
