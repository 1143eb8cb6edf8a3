"""The ``dip`` command line's flags: one subcommand per registered task, plus demo, presets, batch
and (when installed) reproduce."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..classical import METHODS
from ..config import FIDELITIES, PRESETS
from ..tasks import TASKS_BY_NAME
from .commands import cmd_batch
from .task_command import cmd_task

CHANNEL_AXIS_HELP = ("'auto', 'none' or an axis number (default auto: what an ImageJ or OME TIFF states, "
                     "else a last axis of size 3 or 4; a PNG's alpha is kept aside)")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's flags; ``main`` runs the handler of the one given."""
    parser = argparse.ArgumentParser(prog="dip", description="Deep Image Prior restoration (napari-dip engine)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(sub)
    for task in TASKS_BY_NAME.values():  # one subcommand per registered task
        _add_task_parser(sub, task)
    _add_threads(sub.add_parser("presets", help="list the presets and their settings"))
    _add_batch_parser(sub)
    _add_reproduce_parsers(sub)
    return parser


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default: the cores other jobs leave free, at least 1; "
                        "more threads than free cores is many times slower)")


def _add_demo_parser(sub) -> None:
    """``dip demo``: few flags, since the sample and its settings are fixed."""
    p = sub.add_parser("demo", help="restore the shipped text-corrupted photo (CPU-sized, a few minutes)")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("dip_output"))
    p.add_argument("--iterations", type=int, help="default: as many as fit --budget")
    p.add_argument("--budget", metavar="TIME", help="time for the run, e.g. 5min (default 2min)")
    p.add_argument("--device")
    p.add_argument("--full-size", action="store_true", help="512x512 instead of 256x256 (for a GPU)")
    p.add_argument("--quiet", action="store_true")
    _add_threads(p)


def _add_task_parser(sub, task) -> None:
    """``dip <task>``: the task's own mask and options (from the registry), then the flags every task shares."""
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
        p.add_argument(f"--{option.name.replace('_', '-')}", dest=option.name, type=kind, default=option.default,
                       help=f"{option.help} (default {option.default})")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=list(PRESETS),
                   help="settings by name (default: 'cpu' on a CPU, the paper's for the task on a GPU)")
    p.add_argument("--config", type=Path, help="a JSON configuration (e.g. from a history file)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any setting, e.g. --set scales=4 --set up_channels=[64,64,64,64]")
    p.add_argument("--iterations", type=int,
                   help="exactly this many iterations (default on a CPU: as many as fit --budget)")
    p.add_argument("--budget", metavar="TIME",
                   help="time per image for the default run, e.g. 90s, 10min, 1h: the iteration count "
                        "(and the cpu network's width) fitted to this machine's measured speed "
                        "(default 2min on a CPU with no --preset, --config or --iterations)")
    p.add_argument("--lr", type=float)
    p.add_argument("--sigma-p", dest="sigma_p", type=float)
    p.add_argument("--optimizer", choices=["adam", "lbfgs"])
    p.add_argument("--seed", type=int)
    p.add_argument("--restarts", type=int, metavar="K",
                   help="fit K networks from seeds seed..seed+K-1 together (K times the work): the answer "
                        "is their mean, and <name>_spread.tif their per-pixel standard deviation, a map of "
                        "where the fill is uncertain (default 1)")
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
    p.add_argument("--stack", choices=["z", "t"],
                   help="what a stack's slices are: z, planes of a volume (the classical answer is 3D), or t, "
                        "independent slices (default: what an ImageJ or OME TIFF says, else t)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("DZ", "DY", "DX"),
                   help="a z-stack's voxel spacing for the 3D classical answer (default: the TIFF's)")
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


def _add_batch_parser(sub) -> None:
    """``dip batch``: the task's inputs as file patterns, every task's options (each its task's default
    when not given), and the cluster's settings."""
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


def _add_reproduce_parsers(sub) -> None:
    """``dip reproduce ...``, only where the reproduction package is part of the build."""
    try:
        from ..reproduce import add_reproduce_parser
    except ImportError:  # reproduction commands not installed in this build
        pass
    else:
        add_reproduce_parser(sub)
