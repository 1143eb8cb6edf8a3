"""A run's description, checked once and fixed: what the loop fits and how it runs.

:func:`build_spec` checks every input of a run (the images, masks, held-out pixels,
references, seeds, the operator and its mask, the settings and the memory it needs) before
any network is built, and resolves what "auto" means on this device.  The loop reads the
:class:`RunSpec` it returns and never changes it.  The rules that :func:`src_core.prepare`
applies to a user's input too (the mask given once, observed pixels kept only where they are
answer pixels, a mask with something observed) live here, once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from ..checkpoint import fingerprint
from ..config import RunConfig
from ..devices import resolve_device
from ..errors import DIPError
from ..fidelity import MSE, Fidelity
from ..imaging import check_reference
from ..operators import Operator, check_maps, fingerprint_terms, padded_grid, split_mask
from .. import speed

NO_OBSERVED_PIXEL = ("the mask has no observed pixel (True = observed, False = missing); "
                     "nothing to fit. Check that the mask is not inverted.")


def operator_and_mask(operator: Operator | None, mask):
    """(the operator without its Mask, the one mask): given as ``mask`` or inside the
    operator (``Blur(psf).then(Mask(m))``), never both."""
    operator, operator_mask = split_mask(operator)
    if operator_mask is not None:
        if mask is not None:
            raise DIPError("give the mask once: as mask= or inside the operator (Mask), not both.")
        mask = operator_mask
    return operator, mask


def check_keep_observed(keep_observed: bool, operator: Operator) -> None:
    if keep_observed and not operator.identity:
        raise DIPError(f"keep_observed needs observed pixels that are answer pixels; with {operator!r} "
                       "they are not: leave keep_observed off.")


def check_fidelity(config: RunConfig, fidelity: Fidelity | None) -> Fidelity:
    """The data term the run minimises: ``fidelity`` as given, else the MSE.  A Poisson term
    needs the photons an engine unit holds, which only the user's counts tell (the API
    derives it from the input's scaling): the engine does not guess it."""
    if fidelity is None:
        if config.fidelity != "mse":
            raise DIPError(f"fidelity={config.fidelity!r} needs the photon scale of the data, which the "
                           "engine's [0, 1] images do not carry: pass fidelity=src_core.fidelity.Poisson("
                           "photons_per_unit=...), or use src_core.restore, which reads it from the counts.")
        return MSE()
    if not isinstance(fidelity, Fidelity):
        raise DIPError(f"fidelity must be a src_core.fidelity.Fidelity (got {type(fidelity).__name__}).")
    if fidelity.name != config.fidelity:
        raise DIPError(f"the fidelity given ({fidelity.name}) is not the configuration's ({config.fidelity}).")
    return fidelity


@dataclass(frozen=True)
class RunSpec:
    """Everything a run's loop reads, checked (see :func:`build_spec`)."""

    config: RunConfig
    images: tuple            # K (C, H, W) float32 arrays in [0, 1]
    masks: tuple             # K (1|C, H, W) bool, True = observed
    validation: tuple | None  # K held-out masks, disjoint from the masks
    references: tuple | None  # K clean (C, H', W') images at the answer's size
    seeds: tuple
    keep_observed: bool
    operator: Operator
    fidelity: Fidelity
    psnr_peak: float
    output_shape: tuple       # (C, H', W') of each answer
    device: torch.device
    threads: int | None
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    compile: str | bool
    graph: bool
    strategy: str
    grid: object              # the padded grids (operators.Grid)
    memory_needed: int
    start: dict | None = None  # a one-member run's start weights (a warm start), or random ones

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def window(self) -> bool:
        """ES-WMV's window decides the stop (early stopping with nothing held out)."""
        return self.config.early_stop and self.validation is None

    @property
    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed: the problem, the settings, the seeds."""
        extra = [] if self.fidelity.name == "mse" else [self.fidelity.describe()]
        return fingerprint(list(self.images), list(self.masks),
                           None if self.validation is None else list(self.validation),
                           None if self.references is None else list(self.references),
                           json.dumps(self.config.result_settings(), indent=2), list(self.seeds),
                           self.keep_observed,
                           *fingerprint_terms(self.operator), *extra)

    @property
    def fast_path(self) -> dict:
        return {"precision": str(self.amp_dtype or torch.float32).replace("torch.", ""),
                "memory_format": "channels_last" if self.memory_format == torch.channels_last else "contiguous",
                "compile": self.compile, "cuda_graph": self.graph, "members": self.count,
                **({"batch_strategy": self.strategy} if self.count > 1 else {})}


def _per_member(value, k: int, mismatch: str) -> list:
    """One (C|1, H, W) array per member from a (K, ...) array, or the same one K times."""
    value = np.asarray(value)
    if value.ndim == 4 and len(value) != k:
        raise DIPError(mismatch.format(n=len(value), k=k))
    return list(value) if value.ndim == 4 else [value] * k


def build_spec(images, masks=None, config: RunConfig | None = None, references=None, seeds=None,
               strategy: str = "auto", validation=None, keep_observed: bool = False,
               threads: int | None = None, operator: Operator | None = None, psnr_peak: float = 1.0,
               fidelity: Fidelity | None = None, checkpointed: bool = False,
               start: dict | None = None) -> RunSpec:
    """Check a run's inputs (see :class:`~src_core.engine.DIPEnsemble`) and fix its description."""
    config = (config or RunConfig()).validate()
    if isinstance(psnr_peak, bool) or not isinstance(psnr_peak, (int, float)) or not 0 < psnr_peak <= 1:
        raise DIPError(f"psnr_peak must be in (0, 1] (got {psnr_peak!r}).")
    operator, masks = operator_and_mask(operator, masks)
    fidelity = check_fidelity(config, fidelity)
    if checkpointed and config.optimizer != "adam":
        raise DIPError("checkpoints are made for Adam runs; use optimizer='adam' or no checkpoint.")
    device = resolve_device(config.device)
    threads = speed.resolve_threads(threads, device)
    check_keep_observed(keep_observed, operator)
    chws, masks, held, refs, seeds, output_shape = _members(images, masks, validation, references, seeds,
                                                            operator, config)
    k = len(chws)
    if strategy not in ("auto", "vmap", "loop"):
        raise DIPError(f"strategy must be 'auto', 'vmap' or 'loop' (got {strategy!r}).")
    strategy = ("loop" if device.type == "cpu" else "vmap") if strategy == "auto" else strategy
    if k > 1 and config.optimizer != "adam":
        raise DIPError("runs of several members use Adam; run L-BFGS one image at a time (DIPRun).")
    if k > 1 and config.early_stop and validation is None:
        raise DIPError("ES-WMV's early stop decides per run; use DIPRun, or hold pixels out (validation) "
                       "so the members stop together once none of them improves.")
    if start is not None and (k > 1 or not isinstance(start, dict)):
        raise DIPError("start weights are a network's state_dict (Finished.weights), for a run of one member.")
    c, h, w = output_shape
    config.network.check_fits(h, w)
    amp, memory_format, compile_mode, graph = _kernels(config, device)
    grid = padded_grid(chws[0].shape[-2:], operator.factor, operator.margin, config.network.multiple())
    if output_shape[1:] != tuple(operator.factor * n for n in chws[0].shape[-2:]):
        raise DIPError(f"{operator!r}.output_shape {output_shape} is not the observation "
                       f"{chws[0].shape} enlarged by its factor ({operator.factor}); "
                       "a size-changing operator sets factor and keeps the default output_shape.")
    check_maps(operator, c, grid.output, grid.observation)
    window = config.early_stop and held is None  # the window, its best, float64 sums and shift
    extra = ((1 if config.ema > 0 else 0) + (config.es_window + 7 if window else 0)
             + (1 if config.guard else 0) + (3 if held is not None or keep_observed else 0))
    need = speed.check_memory(config.network, c, grid.output, amp, device, members=k, extra_images=extra)
    return RunSpec(config, chws, masks, held, refs, seeds, bool(keep_observed), operator,
                   fidelity, float(psnr_peak), output_shape, device, threads, amp, memory_format,
                   compile_mode if k == 1 else False, graph, strategy, grid, need, start)


def _members(images, masks, validation, references, seeds, operator: Operator, config: RunConfig):
    """Each member's checked (C, H, W) image, mask, held-out pixels, reference and seed (tuples),
    and the answer's shape."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise DIPError(f"a run of several members needs (K, C, H, W) images (got shape {images.shape}).")
    k = images.shape[0]
    if k == 0:
        raise DIPError("a run needs at least one image (got K=0).")
    chws = [check_chw(im, "image") for im in images]
    operator.check(chws[0].shape)
    output_shape = operator.output_shape(chws[0].shape)
    masks = [None] * k if masks is None else _per_member(
        masks, k, "{n} masks for {k} images; give one mask per image, or one (H, W) mask for all.")
    masks = [check_mask(m, im.shape) for m, im in zip(masks, chws)]
    held = None
    if validation is not None:
        held = [check_mask(v, im.shape, "validation mask", may_be_empty=True)
                for v, im in zip(_per_member(validation, k, "{n} validation masks for {k} images; give one "
                                             "per image."), chws)]
        if any((v & m).any() for v, m in zip(held, masks)):
            raise DIPError("validation pixels must be held out of the mask (disjoint from it).")
    refs = None
    if references is not None:
        refs = np.asarray(references)
        if refs.ndim == 3:
            refs = np.stack([refs] * k)
        if refs.ndim != 4 or len(refs) != k:
            raise DIPError(f"references of shape {refs.shape} for {k} images of shape "
                           f"{images.shape[1:]}; give one clean image per image.")
        refs = [check_chw(r, "reference") for r in refs]
        for r in refs:
            check_reference(r.shape, output_shape)
    seeds = list(seeds) if seeds is not None else [config.seed + i for i in range(k)]
    if len(seeds) != k:
        raise DIPError(f"{len(seeds)} seeds for {k} images; give one seed per image.")
    return (tuple(chws), tuple(masks), None if held is None else tuple(held),
            None if refs is None else tuple(refs), tuple(seeds), output_shape)


def _kernels(config: RunConfig, device):
    """How the run computes on ``device``: (autocast dtype, memory format, compile mode, CUDA graph);
    none of them changes what it computes beyond rounding."""
    amp = speed.resolve_precision(config.precision, device)
    memory_format = speed.resolve_memory_format(config.memory_format, device, amp)
    if config.optimizer == "lbfgs":  # torch's L-BFGS flattens gradients with view()
        memory_format = torch.contiguous_format
    compile_mode = speed.resolve_compile(config.compile, device)
    graph = speed.resolve_graph(config.compile, device, config.optimizer, amp)
    return amp, memory_format, compile_mode, graph


# ----------------------------------------------------------------------------- checks

def check_chw(array, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 3:
        raise DIPError(f"{name} must be (C, H, W) for the engine (got shape {a.shape}); "
                       "use src_core.restore() for other layouts.")
    if a.dtype.kind not in "fiub":
        raise DIPError(f"{name} has unsupported dtype {a.dtype}.")
    a = a.astype(np.float32)  # always a copy: the caller's array is never touched
    if a.size == 0:
        raise DIPError(f"{name} is empty (shape {a.shape}).")
    if not np.isfinite(a).all():
        raise DIPError(f"{name} has non-finite values (NaN or inf); src_core.restore() treats "
                       "them as missing pixels, or replace them before calling DIPRun.")
    if a.min() < 0 or a.max() > 1:
        raise DIPError(f"{name} values run from {a.min():g} to {a.max():g}; the engine takes [0, 1] "
                       "(divide 8-bit data by 255), or use src_core.restore(), which scales any range.")
    return a


def check_mask(mask, shape, name: str = "mask", may_be_empty: bool = False) -> np.ndarray:
    c, h, w = shape
    if mask is None:
        return np.ones((1, h, w), dtype=bool)
    m = np.asarray(mask)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[-2:] != (h, w) or m.shape[0] not in (1, c):
        raise DIPError(f"{name} shape {np.shape(mask)} does not match image shape {shape}; "
                       f"give a {name} of shape {(h, w)} (True = observed).")
    if m.dtype != bool:
        if m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all():
            raise DIPError(f"{name} values must be True/False or 0/1 (True = observed); threshold "
                           "a grey mask first, e.g. mask > 0.5.")
    m = m.astype(bool)
    if may_be_empty:
        return m
    if not m.any():
        raise DIPError(NO_OBSERVED_PIXEL)
    return m
