"""src_core: Deep Image Prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018) in PyTorch.

The engine behind napari-dip; it knows nothing of Qt.

>>> import src_core
>>> img = src_core.load_sample("table1/house.png")[::4, ::4]        # 64x64 uint8
>>> result = src_core.restore(img, task="random", preset="cpu", iterations=20)
>>> result.image.shape == img.shape and result.image.dtype == img.dtype
True
"""

from .api import (Problem, RestoreResult, TiledProblem, iterate, make_config, prepare, restore,
                  restore_problem, restore_tiled)
from .config import PRESETS, Preset, RunConfig, preset, preset_names
from .fidelity import FIDELITIES, MSE, Fidelity, Poisson
from .devices import available_devices, resolve_device
from .engine import EnsembleFinished, DIPEnsemble, DIPRun, EarlyStop, Finished, History, Progress, Recovery, psnr_ssim
from .errors import DIPError
from .io import data_path, load_sample, read_image, write_image
from .masks import bernoulli_mask, load_mask, mask_from_labels, text_mask
from .network import NETWORKS, DecoderConfig, NetworkConfig, SkipNet, build_network, count_parameters
from .operators import Blur, Compose, Downsample, Identity, Mask, Operator, gaussian_psf
from .tasks import TASK_HELP, TASKS, get_task
from . import budget, speed, timing  # noqa: F401 (submodules of the public API: src_core.timing.estimate)


def __getattr__(name):
    """Dask's batch tools on first use (importing distributed takes a second)."""
    if name in ("connect", "restore_many"):
        from . import batch

        return getattr(batch, name)
    raise AttributeError(f"module 'src_core' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "EnsembleFinished", "Blur", "Compose", "DIPEnsemble", "DIPError", "DIPRun", "EarlyStop", "Finished", "History",
    "NetworkConfig", "PRESETS",
    "Downsample", "Identity", "Mask", "Operator", "gaussian_psf", "get_task",
    "Problem", "Progress", "TASKS", "TASK_HELP", "Recovery", "RestoreResult", "RunConfig", "SkipNet",
    "DecoderConfig", "FIDELITIES", "Fidelity", "MSE", "NETWORKS", "Poisson", "Preset",
    "available_devices", "bernoulli_mask", "build_network", "count_parameters", "data_path",
    "iterate", "load_mask", "load_sample", "make_config", "mask_from_labels", "prepare",
    "preset", "preset_names", "psnr_ssim", "read_image", "resolve_device", "restore",
    "restore_problem", "restore_tiled", "text_mask", "write_image", "TiledProblem", "connect", "restore_many",
]
