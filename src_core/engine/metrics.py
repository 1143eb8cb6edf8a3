"""The figures a run reports: the fit through its data term, and PSNR/SSIM against a reference."""

from __future__ import annotations

import numpy as np

from ..fidelity import Fidelity
from ..operators import psnr_from_mse  # noqa: F401 (the engine's PSNR of an MSE)


def fit_psnrs(fidelity: Fidelity, losses, observed, peak: float = 1.0) -> list[float]:
    """Each member's fit figure (:meth:`Fidelity.fit_psnr`) with ``peak`` as its peak (see
    ``DIPEnsemble``'s ``psnr_peak``): the same figure for the reports and for the guard."""
    return [fidelity.fit_psnr(v, o, peak) for v, o in zip(losses, observed)]


def psnr_ssim(estimate: np.ndarray, reference: np.ndarray, with_ssim: bool = True, peak: float = 1.0):
    """PSNR and SSIM of a (C, H, W) estimate, clipped to [0, 1], with data_range ``peak`` (1: the
    whole of [0, 1]; less where the data were scaled with headroom, see ``DIPEnsemble``)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    est = np.clip(estimate, 0.0, 1.0)
    psnr = float(peak_signal_noise_ratio(reference, est, data_range=peak))
    ssim = None
    if with_ssim and min(est.shape[-2:]) >= 7:
        ssim = float(structural_similarity(reference, est, data_range=peak, channel_axis=0))
    return psnr, ssim
