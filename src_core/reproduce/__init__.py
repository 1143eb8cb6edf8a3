"""Reproduce the paper: Table 1, Figure 7 and the reproduction reports' experiments.

Python::

    from src_core.reproduce import run_table1, run_figure7, run_experiments
    run_table1("results/table1", preset="quick")

Command line::

    dip reproduce table1 --preset quick -o results/table1
    dip reproduce figure7 --preset paper -o results/figure7      # full size: for a GPU
    dip reproduce experiments --preset quick --only width depth

Presets: ``paper`` (full-size images, the paper's settings; meant for a
GPU), ``quick`` (CPU-sized, under an hour per command on 2 cores, NOT the
paper's setting and labelled so in every output) and ``tiny`` (seconds; for
tests).  Each finished unit (image x seed, or experiment setting) is saved
in the results folder and skipped when the command runs again; a folder
written with another configuration is refused.
"""

from ..classical import biharmonic, total_variation, tv_inpaint
from .cli import add_reproduce_parser
from .common import PAPER_DIP, PAPYAN, TABLE1_IMAGES, destabilisation_events
from .experiments import EXPERIMENTS, experiments_settings, run_experiments
from .figure7 import figure7_settings, run_figure7
from .restoration import restoration_settings, run_restoration
from .table1 import run_table1, table1_settings

__all__ = ["EXPERIMENTS", "PAPER_DIP", "PAPYAN", "TABLE1_IMAGES", "add_reproduce_parser", "biharmonic",
           "destabilisation_events", "experiments_settings", "figure7_settings", "restoration_settings",
           "run_experiments", "run_restoration",
           "run_figure7", "run_table1", "table1_settings", "total_variation", "tv_inpaint"]
