"""One task run from the command line, whole or in tiles: every check first, the estimate, a
progress bar, Ctrl-C to stop with a partial result, then the outputs and what they hold."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import DIPError
from ..progress import ProgressBar
from .outputs import OutputPlan, write_final, write_outputs
from .report import in_cli_terms, note_lines, print_run_report, summary_lines


def run_task(task: str, image: np.ndarray, *, mask=None, reference=None, output_dir: Path, name: str,
             suffix: str = ".png", quiet: bool = False, inputs=(), overwrite: bool = False,
             resume: bool = False, checkpoint_minutes: float = 5.0, client=None, form=None, **kwargs):
    """Restore, write the outputs, print where they are; returns the RestoreResult.

    Every check runs before the optimisation: the settings, the output folder
    (a probe file is written), and the output names (never one of ``inputs``;
    an existing file only with ``overwrite``).  The first Ctrl-C stops after
    the current iteration and writes the partial result under ``*_partial_*``
    names (a second Ctrl-C aborts).  Every file is written atomically.  The
    run's state is kept in ``<name>.checkpoints/`` until its outputs are
    written, so ``resume`` continues a stopped, killed or crashed run.  ``form``: the input
    file's :class:`src_core.io.FileForm`, which every image written takes.
    """
    from ..api import prepare, restore_problem

    problem = prepare(image, mask, task=task, reference=reference, **kwargs)
    cfg = problem.config
    plan = OutputPlan(output_dir, name, suffix, problem.classical is not None,
                      reference is not None or task == "random", inputs, cfg.restarts > 1)
    planned, checkpoints = plan.check(overwrite, resume, checkpoint_minutes)
    problem.run(0).close()  # the engine's own checks (memory above all) before the estimate is printed
    estimate = problem.estimate()
    _announce(task, cfg.preset, estimate, problem.budget)
    label = f"DIP {task} ({cfg.preset}, {estimate.device})"
    # a stack here may start its later slices warm; a cluster's start cold
    bar = ProgressBar(cfg.stack_iterations(problem.slices, warm=client is None), label, quiet)

    t0 = time.perf_counter()
    stop = threading.Event()
    try:
        with _first_interrupt_stops(stop, bar):
            result = restore_problem(problem, image, callback=bar, stop=stop,
                                     checkpoint_dir=checkpoints, client=client,
                                     checkpoint_every_s=60.0 * checkpoint_minutes)
    except DIPError as exc:
        _write_finished_slices(exc, plan, task, t0, form)
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    if not result.histories:
        raise DIPError("stopped before any slice finished: nothing was written (the same command with "
                       "--resume continues).")
    if result.stopped:
        planned = plan.partial_paths()
        print(f"dip: stopped after {result.history.timings['iterations']} iterations; writing the "
              f"partial result (add --resume to the same command to continue the run)", file=sys.stderr)
    written = write_final(result, planned, checkpoints, task, name, wall, form)
    print_run_report(f"done in {wall:.1f} s ({result.history.timings['s_per_iteration']:.3f} s/iteration on "
                     f"{result.history.device})", summary_lines(result) + note_lines(result), written)
    return result, written


def _announce(task: str, preset: str, estimate, budget=None) -> None:
    """The estimate before a run starts (with the count the budget chose, and how to ask for
    more), and a warning with the ways to shorten a long CPU run."""
    from ..timing import LONG_RUN_S

    print(f"dip: {task} with preset '{preset}': {estimate.describe()}", flush=True)
    if budget is not None:
        print(f"dip: {in_cli_terms(budget.note())}", flush=True)
    if estimate.total_s > LONG_RUN_S and not estimate.device.startswith("cuda"):
        faster = ("fewer --iterations" if preset == "cpu"
                  else "'--preset cpu' (the default on a CPU) or fewer --iterations")
        print(f"dip: warning: this is a long run on {estimate.device}; {faster} take minutes, and --tile "
              "runs a large image in tiles (when inpainting, only the damaged ones)", file=sys.stderr, flush=True)


def _write_finished_slices(exc: DIPError, plan: OutputPlan, task: str, t0: float, form) -> None:
    """When a later slice of a stack fails, the slices that finished are kept as a partial result."""
    partial = getattr(exc, "partial", None)
    if partial is not None:
        written = write_outputs(partial, plan.partial_paths(), task, plan.name, time.perf_counter() - t0, form)
        print(f"dip: the finished slices were written to {written['restored']}", file=sys.stderr)


def run_tiled_task(task: str, image: np.ndarray, *, mask=None, reference=None, output_dir: Path, name: str,
                   suffix: str, quiet: bool, inputs, overwrite: bool, tile, overlap, resume: bool = False,
                   checkpoint_minutes: float = 5.0, client=None, form=None, **kwargs):
    """``dip <task> --tile``: the image in overlapping tiles (src_core.tiles), one bar per tile.
    Finished tiles are kept in ``<name>.checkpoints`` until the outputs are written (``resume``)."""
    from ..api import TiledProblem

    tiled = TiledProblem.prepare(image, mask, task=task, reference=reference, tile=tile, overlap=overlap, **kwargs)
    plan = OutputPlan(output_dir, name, suffix, kwargs.get("classical") is not None,
                      reference is not None or task == "random", inputs, tiled.whole.config.restarts > 1)
    planned, checkpoints = plan.check(overwrite, resume, checkpoint_minutes)
    slices = tiled.whole.slices
    every = f"{len(tiled.tiles) * slices} tile(s)" + (f" ({len(tiled.tiles)} a slice)" if slices > 1 else "")
    print(f"dip: {task} in {len(tiled.parts)} of {every} of {tiled.tile} px with preset "
          f"'{tiled.whole.config.preset}': {tiled.estimate().describe()}", flush=True)
    if tiled.whole.budget is not None:
        print(f"dip: {in_cli_terms(tiled.whole.budget.note())} (for the whole image, its tiles together)",
              flush=True)
    bar = ProgressBar(1, f"DIP {task}, tiles", quiet)

    t0 = time.perf_counter()
    stop = threading.Event()
    try:
        with _first_interrupt_stops(stop, bar):
            result = tiled.restore(callback=_tile_progress(bar, task), stop=stop, client=client,
                                   checkpoint_dir=checkpoints, checkpoint_every_s=60.0 * checkpoint_minutes)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    if result.stopped:
        planned = plan.partial_paths()
        print("dip: stopped; writing the partial result (add --resume to the same command to run the "
              "tiles left)", file=sys.stderr)
    if not result.histories:  # no tile ran: no curve to draw
        planned.pop("psnr_curve", None)
    written = write_final(result, planned, checkpoints, task, name, wall, form)
    print_run_report(f"done in {wall:.1f} s", note_lines(result), written)
    return result, written


def _tile_progress(bar: ProgressBar, task: str):
    """The tiled run's callback: one bar, started again (with the tile's total) at each new tile."""
    current = {"tile": None}

    def callback(event, tile_index):
        if tile_index != current["tile"]:
            current["tile"] = tile_index
            bar.bar.reset(total=getattr(event, "total", 1))
            bar.bar.set_description(f"DIP {task}, tile {tile_index}", refresh=False)
        bar(event, tile_index)

    return callback


@contextlib.contextmanager
def _first_interrupt_stops(stop: threading.Event, bar):
    """The first Ctrl-C sets ``stop`` (the run ends after its current step); the second aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if stop.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.set()
        bar.bar.write("dip: stopping after this iteration to write the partial result "
                      "(Ctrl-C again to abort without it)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
