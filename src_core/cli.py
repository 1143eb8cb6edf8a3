"""The ``dip`` command line: headless and batch Deep Image Prior.

    dip demo                                   # the shipped text-inpainting sample, CPU-sized
    dip inpaint photo.png --mask mask.png      # mask: white = observed (the DIP files' convention)
    dip random barbara.png --fraction 0.5      # drop 50% of pixels, restore, PSNR vs the input
    dip denoise noisy.tif --reference clean.tif
    dip sr small.png --factor 4                # super-resolution: a 4x larger answer
    dip deconvolve cells.tif --psf 2.0         # a Gaussian PSF of sigma 2 px, or --psf bead.tif
    dip presets                                # the paper's settings by name

Every run writes ``<name>_restored``, ``<name>_corrupted``, ``<name>_classical`` (the
instant classical answer, for comparison), ``<name>_history.json`` (metrics, timings and
the full configuration) and, with a reference, ``<name>_psnr.png``.  With no ``--preset``
the preset fits the device (``cpu`` on a CPU), and the time a run will take is printed
before it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .config import FIDELITIES, PRESETS, RunConfig, parse_settings
from .classical import METHODS
from .tasks import TASKS_BY_NAME
from .errors import DIPError
from .io import check_writable, json_default
from .progress import ProgressBar


def _overrides(args) -> dict:
    out = parse_settings(args.set)
    for name in ("iterations", "lr", "seed", "device", "report_every", "sigma_p", "optimizer", "fidelity",
                 "photon_gain", "photon_offset"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if getattr(args, "early_stop", False):
        out["early_stop"] = True
    if getattr(args, "no_guard", False):
        out["guard"] = False
    return out


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default: the cores other jobs leave free, at least 1; "
                        "more threads than free cores is many times slower)")


def set_threads(args) -> None:
    """--threads, for every command that has it: the default of every run of this process."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise DIPError(f"--threads must be >= 1 (got {threads}).")
        from .speed import choose_threads

        choose_threads(threads)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=list(PRESETS),
                   help="settings by name (default: 'cpu' on a CPU, the paper's for the task on a GPU)")
    p.add_argument("--config", type=Path, help="a JSON configuration (e.g. from a history file)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any setting, e.g. --set scales=4 --set up_channels=[64,64,64,64]")
    p.add_argument("--iterations", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--sigma-p", dest="sigma_p", type=float)
    p.add_argument("--optimizer", choices=["adam", "lbfgs"])
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--report-every", dest="report_every", type=int)
    p.add_argument("--early-stop", action="store_true", help="ES-WMV early stopping (no ground truth)")
    p.add_argument("--fidelity", choices=list(FIDELITIES),
                   help="the data term: mse (default, the paper's) or poisson (photon counts; with "
                        "--photon-gain and --photon-offset when the values are not counts)")
    p.add_argument("--photon-gain", dest="photon_gain", type=float,
                   help="the input's units per photon (poisson; default 1: the values are counts)")
    p.add_argument("--photon-offset", dest="photon_offset", type=float,
                   help="the input's value at zero photons, the camera's offset (poisson; default 0)")
    p.add_argument("--no-guard", action="store_true", help="switch off the destabilisation guard")
    p.add_argument("--no-keep-observed", dest="keep_observed", action="store_false", default=None,
                   help="return the network's output everywhere (default: observed pixels are kept, "
                        "except when denoising)")
    p.add_argument("--validate", type=float,
                   help="fraction of observed pixels held out of the fit to measure quality without "
                        "ground truth (default 0.05; 0 = off, the paper's protocol)")
    p.add_argument("--classical", default="auto",
                   choices=["auto", "none", *METHODS],
                   help="the instant classical answer written beside DIP's and, for inpainting, "
                        "blended with it (default auto: biharmonic, nlm for denoising, bicubic for "
                        "super-resolution, richardson-lucy for deconvolution)")
    _add_threads(p)
    p.add_argument("--reference", type=Path, help="clean image for true PSNR/SSIM and a PSNR plot")
    p.add_argument("--channel-axis", default="auto", help=CHANNEL_AXIS_HELP)
    p.add_argument("-o", "--output-dir", type=Path, default=Path("dip_output"))
    p.add_argument("--name", help="file name stem of the outputs (default: the input's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist already (inputs are never overwritten)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run that was stopped, killed or crashed, from its checkpoints")
    p.add_argument("--checkpoint-every", type=float, default=5.0, metavar="MINUTES",
                   help="save the run's state this often, to --resume after a crash (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tile", metavar="PIXELS|auto",
                   help="restore a large 2D image in overlapping tiles of this side ('auto': the largest "
                        "that fits in memory); when inpainting, only tiles with missing pixels run")
    p.add_argument("--overlap", type=int, help="pixels shared by neighbouring tiles (default: a quarter "
                   "of the tile, at most the network's context)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="a Dask scheduler (tcp://host:8786): a stack's slices, or the tiles, run there at "
                        "once (default: one after another here)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dip", description="Deep Image Prior restoration (napari-dip engine)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="restore the shipped text-corrupted photo (CPU-sized, a few minutes)")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("dip_output"))
    p.add_argument("--iterations", type=int)
    p.add_argument("--device")
    p.add_argument("--full-size", action="store_true", help="512x512 instead of 256x256 (for a GPU)")
    p.add_argument("--quiet", action="store_true")
    _add_threads(p)

    for task in TASKS_BY_NAME.values():  # one subcommand per registered task
        p = sub.add_parser(task.name, help=task.help)
        p.set_defaults(handler=cmd_task)
        p.add_argument("image", type=Path)
        if task.mask == "random":
            p.add_argument("--fraction", type=float, default=0.5, help="missing fraction (default 0.5)")
            p.add_argument("--mask-seed", type=int, default=0)
        else:
            p.add_argument("--mask", type=Path, required=task.mask == "required",
                           help="mask image; white = observed by default" +
                                ("" if task.mask == "required" else " (default: every pixel observed)"))
            p.add_argument("--mask-observed", choices=["white", "black"], default="white",
                           help="which mask colour marks observed pixels (default white, as in the DIP files)")
        for option in task.options:
            kind = int if option.kind is int else str  # a PSF is a number (sigma) or an image file
            p.add_argument(f"--{option.name}", type=kind, default=option.default,
                           help=f"{option.help} (default {option.default})")
        _add_common(p)

    _add_threads(sub.add_parser("presets", help="list the presets and their settings"))

    p = sub.add_parser("batch", help="restore many images on Dask distributed (a local cluster by default)")
    p.set_defaults(handler=cmd_batch)
    p.add_argument("sources", nargs="+", help="image files, folders or glob patterns (quote the glob)")
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="where answers and histories go")
    p.add_argument("--task", choices=list(TASKS_BY_NAME), default="inpaint", help="default: inpaint")
    p.add_argument("--mask", type=Path, help="one mask file for every image (white = observed)")
    p.add_argument("--mask-pattern", help="each image's mask in its folder, e.g. '{stem}_mask.png'")
    p.add_argument("--mask-observed", choices=["white", "black"], default="white",
                   help="what the mask files' white means: observed (default) or, with black, missing")
    p.add_argument("--reference-pattern", help="each image's clean version in its folder, for true PSNR/SSIM "
                   "in the histories, e.g. '{stem}_clean.png'")
    p.add_argument("--channel-axis", default="auto", help=CHANNEL_AXIS_HELP)
    p.add_argument("--fraction", type=float, default=0.5, help="task random: missing fraction")
    p.add_argument("--mask-seed", type=int, default=0, help="task random: mask seed")
    for option in {o.name: o for t in TASKS_BY_NAME.values() for o in t.options}.values():
        p.add_argument(f"--{option.name}", type=int if option.kind is int else str,
                       help=f"{option.help} (its task's default if not given)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, help="workers of the local cluster (default: one per GPU, else "
                   "one per free core)")
    p.add_argument("--preset", choices=list(PRESETS))
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--iterations", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--validate", type=float)
    p.add_argument("--no-keep-observed", dest="keep_observed", action="store_false", default=None)
    p.add_argument("--tile", metavar="PIXELS|auto",
                   help="restore each image (or page) in overlapping tiles of this side, on its worker")
    p.add_argument("--overlap", type=int, help="pixels shared by neighbouring tiles")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results an earlier call made with other settings (same settings: skipped)")
    p.add_argument("--threads", type=int, help="CPU threads of each worker (default 1: the workers use the cores)")
    p.add_argument("--quiet", action="store_true")

    try:
        from .reproduce import add_reproduce_parser
    except ImportError:  # reproduction commands not installed in this build
        pass
    else:
        add_reproduce_parser(sub)
    return parser


CHANNEL_AXIS_HELP = ("'auto', 'none' or an axis number (default auto: what an ImageJ or OME TIFF states, "
                     "else a last axis of size 3 or 4; a PNG's alpha is kept aside)")


def _channel_axis(text):
    if text in (None, "auto"):
        return "auto"
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise DIPError(f"--channel-axis takes 'auto', 'none' or an axis number (got {text!r}).") from None


def _checkpoint_folder(output_dir: Path, name: str, resume: bool, overwrite: bool, minutes) -> Path:
    """``<name>.checkpoints``, where a run keeps what it finished until its outputs are written:
    required by ``resume``, refused without it (unless ``overwrite`` starts again)."""
    checkpoints = output_dir / f"{name}.checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()  # a run refused or stopped before it kept anything: nothing to resume
    if resume and not checkpoints.is_dir():
        raise DIPError(f"nothing to resume: {checkpoints} does not exist (it is removed when a run "
                       "finishes).")
    if checkpoints.exists() and not resume:
        if not overwrite:
            raise DIPError(f"an interrupted run left its checkpoints in {checkpoints}: add --resume to "
                           "continue it, or --overwrite to start again.")
        shutil.rmtree(checkpoints)
    if not isinstance(minutes, (int, float)) or not minutes >= 0:
        raise DIPError(f"--checkpoint-every must be >= 0 minutes (got {minutes}).")
    if resume:
        kept = sum(1 for _ in checkpoints.iterdir())
        print(f"dip: resuming from {checkpoints} ({kept} saved file(s): finished slices or tiles, and "
              "the last save of the one that was running)", flush=True)
    return checkpoints


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
    from .api import prepare, restore_problem
    from .timing import LONG_RUN_S

    problem = prepare(image, mask, task=task, reference=reference, **kwargs)
    cfg = problem.config
    plots = reference is not None or task == "random"
    planned = output_paths(output_dir, name, suffix, problem.classical is not None, plots)
    check_outputs(planned.values(), inputs, overwrite)
    check_writable(output_dir)
    checkpoints = _checkpoint_folder(output_dir, name, resume, overwrite, checkpoint_minutes)
    problem.run(0).close()  # the engine's own checks (memory above all) before the estimate is printed
    estimate = problem.estimate()
    print(f"dip: {task} with preset '{cfg.preset}': {estimate.describe()}", flush=True)
    if estimate.total_s > LONG_RUN_S and not estimate.device.startswith("cuda"):
        faster = "fewer --iterations" if cfg.preset == "cpu" else "'--preset cpu' (the default on a CPU) or fewer --iterations"
        print(f"dip: warning: this is a long run on {estimate.device}; {faster} take minutes, and --tile "
              "runs a large image in tiles (when inpainting, only the damaged ones)", file=sys.stderr, flush=True)
    label = f"DIP {task} ({cfg.preset}, {estimate.device})"
    bar = ProgressBar(cfg.iterations * problem.slices, label, quiet)

    t0 = time.perf_counter()
    stop = threading.Event()
    try:
        with _first_interrupt_stops(stop, bar):
            result = restore_problem(problem, image, callback=bar, stop=stop,
                                     checkpoint_dir=checkpoints, client=client,
                                     checkpoint_every_s=60.0 * checkpoint_minutes)
    except DIPError as exc:
        partial = getattr(exc, "partial", None)
        if partial is not None:  # a later slice failed: keep the finished ones
            written = write_outputs(partial, _partial_paths(output_dir, name, suffix, problem.classical is not None,
                                                            plots, inputs), task, name, time.perf_counter() - t0,
                                    form)
            print(f"dip: the finished slices were written to {written['restored']}", file=sys.stderr)
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    if not result.histories:
        raise DIPError("stopped before any slice finished: nothing was written (the same command with "
                       "--resume continues).")
    if result.stopped:
        planned = _partial_paths(output_dir, name, suffix, problem.classical is not None, plots, inputs)
        print(f"dip: stopped after {result.history.timings['iterations']} iterations; writing the "
              f"partial result (add --resume to the same command to continue the run)", file=sys.stderr)
    written = write_outputs(result, planned, task, name, wall, form)
    if not result.stopped:
        shutil.rmtree(checkpoints, ignore_errors=True)  # the outputs are written: nothing to resume
    print(f"done in {wall:.1f} s ({result.history.timings['s_per_iteration']:.3f} s/iteration on "
          f"{result.history.device})")
    for line in summary_lines(result) + note_lines(result):
        print(f"  {line}")
    for kind, path in written.items():
        print(f"  {kind:10s} {path}")
    return result, written


def note_lines(result) -> list[str]:
    """The run's notes (the problem's, then each slice's), which otherwise only the history file
    holds: why there is no blend, a fall the guard undid, a resumed run."""
    lines = [f"note: {n}" for n in result.notes]
    for index, h in enumerate(result.histories):
        where = f"slice {index if h.part is None else h.part}: " if len(result.histories) > 1 else ""
        lines += [f"note: {where}{n}" for n in h.notes if n not in result.notes]
    return [in_cli_terms(line) for line in dict.fromkeys(lines)]


def output_paths(output_dir: Path, name: str, suffix: str, classical: bool, plots: bool) -> dict:
    """Every file a task run writes, by kind, decided before the run."""
    out = {"restored": output_dir / f"{name}_restored{suffix}",
           "corrupted": output_dir / f"{name}_corrupted{suffix}"}
    if classical:
        out["classical"] = output_dir / f"{name}_classical{suffix}"
    out["history"] = output_dir / f"{name}_history.json"
    if plots:
        out["psnr_curve"] = output_dir / f"{name}_psnr.png"
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or (Path(a).exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(paths, inputs, overwrite: bool) -> None:
    """Refuse to write over an input, ever, and over an existing output unless asked to."""
    inputs = [Path(p) for p in inputs if p is not None]
    for path in paths:
        for given in inputs:
            if _same_file(path, given):
                raise DIPError(f"the output {path} would overwrite your input {given}; choose another "
                               "--name or -o.")
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise DIPError(f"{len(existing)} output file(s) exist already ({', '.join(existing[:3])}"
                       f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace them, or "
                       "choose another --name or -o.")


def _partial_paths(output_dir: Path, name: str, suffix: str, classical: bool, plots: bool, inputs) -> dict:
    """Where a stopped or failed run's partial result goes: ``<name>_partial``, -2, -3, ..."""
    return _free_names(output_paths(output_dir, f"{name}_partial", suffix, classical, plots), inputs)


def _free_names(planned: dict, inputs) -> dict:
    """``planned`` as is, or with the first -2, -3, ... suffix under which nothing exists."""
    for n in range(1, 1000):
        paths = {k: (p if n == 1 else p.with_name(p.name.replace("_partial", f"_partial-{n}", 1)))
                 for k, p in planned.items()}
        if not any(p.exists() for p in paths.values()) and not any(
                _same_file(p, i) for p in paths.values() for i in inputs if i is not None):
            return paths
    raise DIPError("no free name for the partial result; clean the output folder.")


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


def write_outputs(result, planned: dict, task: str, name: str, wall: float, form=None) -> dict:
    """Write the images, the history and the PSNR plot (each atomically); return kind -> path.
    ``form``: the input file's :class:`src_core.io.FileForm`, which every image takes."""
    from .io import FileForm, write_text
    from .plots import history_curves, history_marks, plot_psnr_curves

    image = (form or FileForm()).write
    written = {"restored": image(planned["restored"], result.image),
               "corrupted": image(planned["corrupted"], result.corrupted)}
    if "classical" in planned and result.classical is not None:
        written["classical"] = image(planned["classical"], result.classical)
    record = result.to_dict()
    record["command"] = " ".join(["dip", *sys.argv[1:]]) if sys.argv[0].endswith("dip") else None
    record["wall_s"] = wall
    written["history"] = write_text(planned["history"], json.dumps(record, indent=1, default=json_default))
    if "psnr_curve" in planned:
        h = result.history
        written["psnr_curve"] = plot_psnr_curves(
            history_curves(h), planned["psnr_curve"],
            title=f"{name}: DIP {task}, preset {result.config.preset}", marks=history_marks(h))
    return written


def summary_lines(result) -> list[str]:
    """How the answer compares with the corrupted input and the classical method, per slice."""
    lines = []
    for index, h in enumerate(result.histories):
        s = h.summary
        where = f"slice {index if h.part is None else h.part}: " if len(result.histories) > 1 else ""
        method = s.get("classical_method")
        if s.get("psnr_answer") is not None:
            parts = [f"corrupted {s['psnr_corrupted']:.2f} dB"] if "psnr_corrupted" in s else []
            parts.append(f"DIP {s['psnr_dip']:.2f} dB")
            if method:
                parts.append(f"{method} {s['psnr_classical']:.2f} dB ({s['classical_seconds']:.2f} s)")
            parts.append(f"answer {s['psnr_answer']:.2f} dB")
            lines.append(where + "PSNR: " + ", ".join(parts))
        elif s.get("val_psnr_dip") is not None:
            parts = [f"held-out pixels ({s['held_out_pixels']}): DIP {s['val_psnr_dip']:.2f} dB"]
            if s.get("val_psnr_classical") is not None:
                parts.append(f"{method} {s['val_psnr_classical']:.2f} dB")
            lines.append(where + ", ".join(parts) + " (no reference given)")
        if s.get("blend_alpha") is not None:
            place = "in the holes" if s.get("keep_observed") else "everywhere"
            lines.append(where + f"answer = {s['blend_alpha']:.2f} x DIP + {1 - s['blend_alpha']:.2f} x "
                         f"{method} {place} (weights fitted on the held-out pixels)")
        if s.get("keep_observed"):
            lines.append(where + "observed pixels kept as they were (--no-keep-observed to change)")
    return lines


def cmd_demo(args) -> int:
    """Kate with the paper's text mask, at 256x256 with the CPU preset (the paper's is 512, 'text')."""
    from .io import load_sample
    from .masks import load_mask
    from .plots import plot_panel

    image = load_sample("dip/kate.png")
    mask = load_mask(_sample_path("dip/kate_mask.png"))
    if not args.full_size:
        image = _downscale2(image)
        mask = _downscale2(mask.astype(np.float32)) > 0.99  # a pixel touched by text stays missing
    overrides = {"iterations": args.iterations} if args.iterations else {}
    if args.device:
        overrides["device"] = args.device
    name = "kate"
    result, written = run_task("inpaint", image, mask=mask, reference=image, output_dir=args.output_dir,
                               name=name, quiet=args.quiet, preset="text" if args.full_size else "cpu",
                               report_every=25, overwrite=True, **overrides)  # its own demo files
    s = result.history.summary
    panel = plot_panel(
        [result.corrupted, result.classical, result.image, image],
        [f"corrupted ({s['psnr_corrupted']:.2f} dB)",
         f"biharmonic, {s['classical_seconds']:.1f} s ({s['psnr_classical']:.2f} dB)",
         f"napari-dip, {result.history.timings['iterations']} it ({s['psnr_answer']:.2f} dB)",
         "original"],
        args.output_dir / f"{name}_panel.png")
    print(f"  {'panel':10s} {panel}")
    return INTERRUPTED if result.stopped else 0


def _sample_path(name):
    from .io import data_path

    return data_path(name)


def _downscale2(image: np.ndarray) -> np.ndarray:
    """2x2 box average, keeping dtype."""
    h, w = image.shape[:2]
    blocks = image[: h // 2 * 2, : w // 2 * 2].astype(np.float64)
    blocks = blocks.reshape(h // 2, 2, w // 2, 2, *image.shape[2:]).mean(axis=(1, 3))
    if image.dtype.kind in "iu":
        return np.rint(blocks).astype(image.dtype)
    return blocks.astype(image.dtype)


def _check_tiling(args) -> None:
    if args.overlap is not None and args.tile is None:
        raise DIPError("--overlap is how much neighbouring tiles share: it needs --tile.")


def cmd_task(args) -> int:
    from .io import read_input
    from .masks import load_mask

    if args.name is not None and (Path(args.name).name != args.name or args.name in ("", ".", "..")):
        raise DIPError(f"--name is the outputs' file name stem, not a path (got {args.name!r}); "
                       "-o chooses their folder.")
    _check_tiling(args)
    asked_axis = _channel_axis(args.channel_axis)
    image, channel_axis, form = read_input(args.image, asked_axis)
    task = TASKS_BY_NAME[args.command]
    mask_notes = []
    mask_file = getattr(args, "mask", None)
    mask = load_mask(mask_file, args.mask_observed, mask_notes) if mask_file is not None else None
    if not args.quiet:
        for note in mask_notes:
            print(f"mask {args.mask.name}: {note}")
    reference = read_input(args.reference, asked_axis, "reference")[0] if args.reference else None
    kwargs = dict(channel_axis=channel_axis, keep_observed=args.keep_observed,
                  validate=args.validate, classical=None if args.classical == "none" else args.classical,
                  **_overrides(args))
    if args.config:
        if args.preset:
            raise DIPError("give either --preset or --config, not both.")
        kwargs["config"] = RunConfig.load(args.config)
    elif args.preset:
        kwargs["preset"] = args.preset
    if task.mask == "random":
        kwargs.update(missing_fraction=args.fraction, mask_seed=args.mask_seed)
    for option in task.options:
        kwargs[option.name] = _option_value(option, getattr(args, option.name))
    suffix = args.image.suffix.lower() if args.image.suffix.lower() in (".png", ".tif", ".tiff", ".npy") else ".png"
    # every file the command reads (a PSF file too), so no output is ever written over one
    inputs = (args.image, mask_file, args.reference, args.config) + tuple(
        Path(v) for v in vars(args).values() if isinstance(v, str) and Path(v).is_file())
    common = dict(mask=mask, reference=reference, output_dir=args.output_dir, name=args.name or args.image.stem,
                  suffix=suffix, quiet=args.quiet, inputs=inputs, overwrite=args.overwrite, resume=args.resume,
                  checkpoint_minutes=args.checkpoint_every, form=form)
    if form.alpha is not None and not args.quiet:
        print(f"dip: {args.image.name} has an alpha channel: it is kept as it is on the outputs, not restored")
    tile = None
    if args.tile is not None:
        tile = args.tile if args.tile == "auto" else _whole_number(args.tile, "--tile")
    client = None
    if args.scheduler:
        from .batch import connect, dashboard

        client = connect(args.scheduler)
        link = dashboard(client)
        print(f"dip: the {'tiles' if tile else 'slices'} run on the Dask cluster at {args.scheduler}"
              + (f" (dashboard {link})" if link else ""), flush=True)
    try:
        if tile is not None:
            result, _ = run_tiled_task(args.command, image, tile=tile, overlap=args.overlap, client=client,
                                       **common, **kwargs)
        else:
            result, _ = run_task(args.command, image, client=client, **common, **kwargs)
    finally:
        if client is not None:
            client.close()
    return INTERRUPTED if result.stopped else 0  # a partial result: scripts must see it did not finish


def _whole_number(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DIPError(f"{name} takes a whole number of pixels or 'auto' (got {text!r}).") from None


def run_tiled_task(task: str, image: np.ndarray, *, mask=None, reference=None, output_dir: Path, name: str,
                   suffix: str, quiet: bool, inputs, overwrite: bool, tile, overlap, resume: bool = False,
                   checkpoint_minutes: float = 5.0, client=None, form=None, **kwargs):
    """``dip <task> --tile``: the image in overlapping tiles (src_core.tiles), one bar per tile.
    Finished tiles are kept in ``<name>.checkpoints`` until the outputs are written (``resume``)."""
    from .api import TiledProblem

    tiled = TiledProblem.prepare(image, mask, task=task, reference=reference, tile=tile, overlap=overlap, **kwargs)
    classical, plots = kwargs.get("classical") is not None, reference is not None or task == "random"
    planned = output_paths(output_dir, name, suffix, classical, plots)
    check_outputs(planned.values(), inputs, overwrite)
    check_writable(output_dir)
    checkpoints = _checkpoint_folder(output_dir, name, resume, overwrite, checkpoint_minutes)
    print(f"dip: {task} in {len(tiled.parts)} of {len(tiled.tiles)} tile(s) of {tiled.tile} px with preset "
          f"'{tiled.whole.config.preset}': {tiled.estimate().describe()}", flush=True)
    bar = ProgressBar(1, f"DIP {task}, tiles", quiet)
    current = {"tile": None}

    def callback(event, tile_index):
        if tile_index != current["tile"]:
            current["tile"] = tile_index
            bar.bar.reset(total=getattr(event, "total", 1))
            bar.bar.set_description(f"DIP {task}, tile {tile_index}", refresh=False)
        bar(event, tile_index)

    t0 = time.perf_counter()
    stop = threading.Event()
    try:
        with _first_interrupt_stops(stop, bar):
            result = tiled.restore(callback=callback, stop=stop, client=client, checkpoint_dir=checkpoints,
                                   checkpoint_every_s=60.0 * checkpoint_minutes)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    if result.stopped:
        planned = _partial_paths(output_dir, name, suffix, classical, plots, inputs)
        print("dip: stopped; writing the partial result (add --resume to the same command to run the "
              "tiles left)", file=sys.stderr)
    if not result.histories:  # no tile ran: no curve to draw
        planned.pop("psnr_curve", None)
    written = write_outputs(result, planned, task, name, wall, form)
    if not result.stopped:
        shutil.rmtree(checkpoints, ignore_errors=True)
    print(f"done in {wall:.1f} s")
    for line in note_lines(result):
        print(f"  {line}")
    for kind, path in written.items():
        print(f"  {kind:10s} {path}")
    return result, written


def _option_value(option, value):
    """A task option from the command line: numbers as numbers, anything else an image file."""
    if option.kind is int or not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        from .io import read_image

        return read_image(Path(value)).astype(np.float64)


def cmd_batch(args) -> int:
    """``dip batch``: every image one Dask task; finished items are kept and skipped next time."""
    from tqdm import tqdm

    from .batch import collect, connect, not_images, restore_many

    _check_tiling(args)
    items = collect(args.sources, mask=args.mask, mask_pattern=args.mask_pattern,
                    reference_pattern=args.reference_pattern)
    passed_over = not_images(args.sources)
    if passed_over and not args.quiet:
        print(f"dip batch: passing over {len(passed_over)} entr{'y' if len(passed_over) == 1 else 'ies'} that "
              f"are not images ({', '.join(passed_over[:8])}{' ...' if len(passed_over) > 8 else ''})")
    settings = dict(task=args.task, **parse_settings(args.set))
    # only when not the default: a batch finished before these options existed is still the same batch
    if args.mask_observed != "white":
        settings["mask_observed"] = args.mask_observed
    channel_axis = _channel_axis(args.channel_axis)
    if channel_axis != "auto":
        settings["channel_axis"] = channel_axis
    for name in ("iterations", "device", "validate", "keep_observed", "preset", "threads"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if TASKS_BY_NAME[args.task].mask == "random":
        settings.update(missing_fraction=args.fraction, mask_seed=args.mask_seed)
    if args.tile is not None:
        settings["tile"] = args.tile if args.tile == "auto" else _whole_number(args.tile, "--tile")
        if args.overlap is not None:
            settings["overlap"] = args.overlap
    for option in TASKS_BY_NAME[args.task].options:
        if getattr(args, option.name) is not None:
            settings[option.name] = _option_value(option, getattr(args, option.name))
    client = connect(args.scheduler) if args.scheduler else None
    bar = tqdm(total=len(items), desc=f"dip batch {args.task}", unit="image", disable=args.quiet)
    try:
        summary = restore_many(items, args.output_dir, client=client, workers=args.workers,
                               overwrite=args.overwrite, callback=lambda entry: bar.update(1), **settings)
    finally:
        bar.close()
        if client is not None:  # else it would outlive the command and keep dask pointed at it
            client.close()
    print(f"{len(summary.done)} restored, {len(summary.skipped)} already done, {len(summary.failed)} failed "
          f"in {summary.seconds:.1f} s on {summary.workers} worker(s)"
          + (f"; dashboard {summary.dashboard}" if summary.dashboard else ""))
    for entry in summary.failed:
        print(f"  failed {entry['name']}: {entry['error']}", file=sys.stderr)
    print(f"  summary    {args.output_dir / 'batch_summary.json'}")
    return 1 if summary.failed else 0


def cmd_presets(args) -> int:
    from .tasks import preset_task

    for name, entry in PRESETS.items():
        cfg = entry.config
        net = {k: v for k, v in cfg.network.to_dict().items() if k != "input_channels"}
        print(f"{name:8s} {entry.description}")
        print(f"         task={preset_task(name) or 'any'} input={cfg.input_kind}x{cfg.network.input_channels} "
              f"lr={cfg.lr} iterations={cfg.iterations} sigma_p={cfg.sigma_p:.4g} ema={cfg.ema}")
        print(f"         network {cfg.network.architecture}: " + " ".join(f"{k}={v}" for k, v in net.items()
                                               if getattr(type(cfg.network)(), k, None) != v or k == "scales"))
    return 0


#: the engine's words for a setting (it speaks Python) -> the command line's
CLI_TERMS = (
    (re.compile(r"\bpass channel_axis \(an axis number, or None for no channels\)"),
     "pass --channel-axis (an axis number, or none for no channels)"),
    (re.compile(r"\bchannel_axis\b"), "--channel-axis"),
    (re.compile(r"\bmissing_fraction\b"), "--fraction"),
    (re.compile(r"\(scales=(\d+)\)"), r"(--set scales=\1)"),
    (re.compile(r"\biterations=(\d+)"), r"--iterations \1"),
    (re.compile(r"with task='inpaint'"), "with `dip inpaint`"),
    (re.compile(r"\(True = observed, False = missing\)"),
     "(in a mask file white = observed by default; --mask-observed black if yours is the other way)"),
)


def in_cli_terms(message: str) -> str:
    """An engine error or note in the command line's words (--channel-axis, not channel_axis)."""
    for pattern, words in CLI_TERMS:
        message = pattern.sub(words, message)
    return message


#: the exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as the CLI's other messages: one line, no source path or code."""
    print(f"dip: warning: {message}", file=file or sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"demo": cmd_demo, "presets": cmd_presets}
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            set_threads(args)
            handler = handlers.get(args.command) or args.handler
            return handler(args)
    except DIPError as exc:
        print(f"dip: error: {in_cli_terms(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dip: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
