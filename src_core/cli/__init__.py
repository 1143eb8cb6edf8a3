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

The package, one job a module: ``parser`` (the flags), ``arguments`` (the flags as the engine's
values), ``task_command`` (``dip <task>``), ``running`` (one run, whole or tiled), ``outputs``
(the files it writes), ``report`` (what the terminal shows) and ``commands`` (demo, presets, batch).
"""

from __future__ import annotations

import sys
import warnings

from ..errors import DIPError
from ..progress import ProgressBar  # noqa: F401  (the bar every task run draws; tests patch it here)
from .arguments import set_threads
from .commands import _downscale2, cmd_batch, cmd_demo, cmd_presets  # noqa: F401
from .outputs import check_outputs, output_paths, write_outputs  # noqa: F401
from .parser import CHANNEL_AXIS_HELP, build_parser  # noqa: F401
from .report import CLI_TERMS, INTERRUPTED, _one_line_warning, in_cli_terms, note_lines, summary_lines  # noqa: F401
from .running import run_task, run_tiled_task  # noqa: F401
from .task_command import cmd_task  # noqa: F401

__all__ = ["main", "build_parser", "run_task", "run_tiled_task", "cmd_task", "cmd_demo", "cmd_batch",
           "cmd_presets", "write_outputs", "check_outputs", "output_paths", "note_lines", "summary_lines",
           "in_cli_terms", "set_threads", "INTERRUPTED", "CLI_TERMS", "CHANNEL_AXIS_HELP", "ProgressBar"]


def main(argv=None) -> int:
    """``dip``: parse the flags and run the subcommand; an engine error is one line and status 2,
    Ctrl-C outside a run's own handling status 130."""
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
