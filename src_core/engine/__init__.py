"""The optimisation loop, as a generator of progress events.

One loop serves the napari widget, the CLI and notebooks: each drives a :class:`DIPRun`
(one network) or a :class:`DIPEnsemble` (K independent networks fitted in one pass) and
decides what to do with the events.  The parts, in the order a run meets them:

* :mod:`.spec`: the run's inputs checked once, and fixed (:class:`~.spec.RunSpec`);
* :mod:`.members`: the generators and their input code;
* :mod:`.loop`: :class:`~.loop.Fit`, the only owner of a run's device state, which steps,
  reports and finishes; with :mod:`.guard` (falls put back), :mod:`.stopping` (held-out
  pixels, ES-WMV) and :mod:`.graph` (the CUDA step graph);
* :mod:`.events` and :mod:`.metrics`: what it hands out;
* :mod:`.run`: the two generators a caller iterates.
"""

from .events import EarlyStop, EnsembleFinished, Finished, History, Progress, Recovery, UNDERFIT_DB
from .members import make_input
from .metrics import psnr_from_mse, psnr_ssim
from .run import DIPEnsemble, DIPRun

__all__ = ["DIPEnsemble", "DIPRun", "EarlyStop", "EnsembleFinished", "Finished", "History", "Progress",
           "Recovery", "UNDERFIT_DB", "make_input", "psnr_from_mse", "psnr_ssim"]
