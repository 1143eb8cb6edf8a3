"""``dip reproduce table1 | figure7 | experiments | sr | denoise``: the paper's results in one command each.

    dip reproduce table1 --preset quick -o docs/results/table1
    dip reproduce table1 --preset paper --device cuda -o results/table1_paper      # a GPU
    dip reproduce figure7 --preset quick -o docs/results/figure7
    dip reproduce experiments --preset quick --only width depth -o docs/results/experiments
    dip reproduce sr --preset quick -o docs/results/sr
    dip reproduce denoise --preset quick -o docs/results/denoise

A command run again with the same folder skips what is done; a folder
written with another configuration is refused.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..config import COMPILE_MODES, parse_settings
from .common import PRESET_NAMES, TABLE1_IMAGES

PRESET_HELP = ("paper: full-size images and the paper's settings (hours on a CPU; for a GPU). "
               "quick: CPU-sized, under an hour on 2 cores, NOT the paper's setting. "
               "tiny: seconds, for tests. Default: quick")


def _common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--preset", choices=PRESET_NAMES, default="quick", help=PRESET_HELP)
    p.add_argument("-o", "--output-dir", type=Path,
                   help=f"results folder (default dip_output/reproduce/{command}_<preset>); reusing it "
                        "resumes the run")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting of every DIP run (changes the configuration fingerprint), "
                        "e.g. --set iterations=500")
    p.add_argument("--iterations", type=int, help="shorthand for --set iterations=N")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--compile", default="auto", choices=COMPILE_MODES,
                   help="how the kernels run (auto: a CUDA graph on a GPU; reduce-overhead: torch.compile "
                        "with CUDA graphs, faster on a GPU for long runs after ~45 s of compiling); "
                        "like --device, it is not part of the configuration fingerprint")
    p.add_argument("--data-dir", type=Path, help="folder with the images (<name>.png) instead of the shipped copies")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default: the cores other jobs leave free); 1 is safest on a "
                        "CPU shared with other jobs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_reproduce_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``reproduce`` and its three commands to the ``dip`` parser."""
    parser = subparsers.add_parser(
        "reproduce", help="reproduce the paper's Table 1, Figure 7, SR and denoising, and the reports' experiments",
        description="Reproduce the paper's Table 1 and Figure 7 and the reproduction reports' experiments. "
                    "Running a command again with the same folder skips the finished work; a folder written "
                    "with another configuration is refused.")
    sub = parser.add_subparsers(dest="reproduce_command", required=True,
                                metavar="{table1,figure7,experiments,sr,denoise}")

    p = sub.add_parser("table1", help="Table 1: 11 images, 50%% missing, several mask seeds, baselines")
    p.add_argument("--images", nargs="+", metavar="NAME", help=f"a subset of {', '.join(TABLE1_IMAGES)}")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="mask seeds (default 0 1 2)")
    p.add_argument("--baselines-only", action="store_true",
                   help="only the classical baselines on the preset's masks (minutes on a CPU, even for the "
                        "paper preset); rerun without it in the same folder to add DIP")
    _common(p, "table1")
    p.set_defaults(handler=cmd_table1)

    p = sub.add_parser("figure7", help="Figure 7: Kate text inpainting and Barbara 50%% missing panels")
    _common(p, "figure7")
    p.set_defaults(handler=cmd_figure7)

    from .experiments import EXPERIMENTS

    p = sub.add_parser("experiments", help="the reports' experiments: width, depth, lr, optimizer, long runs, guard")
    p.add_argument("--only", nargs="+", choices=EXPERIMENTS, metavar="NAME",
                   help=f"run a subset of {', '.join(EXPERIMENTS)}")
    p.add_argument("--image", default="barbara", help="Table 1 image of the long runs (default barbara)")
    _common(p, "experiments")
    p.set_defaults(handler=cmd_experiments)

    p = sub.add_parser("sr", help="super-resolution x4 and x8 (zebra), against bicubic upsampling")
    _common(p, "sr")
    p.set_defaults(handler=cmd_restoration)
    p = sub.add_parser("denoise", help="denoising (F16, sigma 25), against non-local means and TV")
    _common(p, "denoise")
    p.set_defaults(handler=cmd_restoration)
    return parser


def _overrides(args) -> dict:
    out = parse_settings(args.set, example="iterations=500")
    if args.iterations is not None:
        out["iterations"] = args.iterations
    return out


def _output_dir(args) -> Path:
    """The results folder, proven writable before any unit runs (a probe file is written)."""
    from ..io import check_writable

    return check_writable(args.output_dir or Path("dip_output") / "reproduce" /
                          f"{args.reproduce_command}_{args.preset}")


def _command(args, extra: list[str]) -> str:
    """The canonical command line of this invocation (what is recorded next to every table)."""
    words = ["dip", "reproduce", args.reproduce_command, "--preset", args.preset, "-o", str(_output_dir(args))]
    words += extra
    for item in args.set or []:
        words += ["--set", item]
    if args.iterations is not None:
        words += ["--iterations", str(args.iterations)]
    if args.device != "auto":
        words += ["--device", args.device]
    if args.compile != "auto":
        words += ["--compile", args.compile]
    if args.data_dir:
        words += ["--data-dir", str(args.data_dir)]
    if args.threads is not None:
        words += ["--threads", str(args.threads)]
    return " ".join(shlex.quote(w) for w in words)


def _done(result) -> int:
    print(f"results in {result['folder']}; table: {result['markdown']}")
    return 0


def cmd_table1(args) -> int:
    from .table1 import run_table1

    extra = (["--images", *args.images] if args.images else []) + \
            (["--seeds", *map(str, args.seeds)] if args.seeds else []) + \
            (["--baselines-only"] if args.baselines_only else [])
    return _done(run_table1(_output_dir(args), preset=args.preset, images=args.images, seeds=args.seeds,
                            overrides=_overrides(args), device=args.device, compile_mode=args.compile,
                            data_dir=args.data_dir,
                            quiet=args.quiet, command=_command(args, extra),
                            baselines_only=args.baselines_only))


def cmd_figure7(args) -> int:
    from .figure7 import run_figure7

    return _done(run_figure7(_output_dir(args), preset=args.preset, overrides=_overrides(args),
                             device=args.device, compile_mode=args.compile, data_dir=args.data_dir, quiet=args.quiet,
                             command=_command(args, [])))


def cmd_experiments(args) -> int:
    from .experiments import run_experiments

    extra = (["--only", *args.only] if args.only else []) + (["--image", args.image] if args.image != "barbara" else [])
    return _done(run_experiments(_output_dir(args), preset=args.preset, only=args.only, table1_image=args.image,
                                 overrides=_overrides(args), device=args.device, compile_mode=args.compile,
                                 data_dir=args.data_dir,
                                 quiet=args.quiet, command=_command(args, extra)))


def cmd_restoration(args) -> int:
    from .restoration import run_restoration

    return _done(run_restoration(args.reproduce_command, _output_dir(args), preset=args.preset,
                                 overrides=_overrides(args), device=args.device, compile_mode=args.compile,
                                 data_dir=args.data_dir,
                                 quiet=args.quiet, command_line=_command(args, [])))
