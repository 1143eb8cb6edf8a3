"""The data term: how far what the network predicts lies from what was observed.

Deep Image Prior minimises a data term between the observation ``y`` and the operator
applied to the network's output, ``A(x)`` (:mod:`src_core.operators`), on the observed
pixels.  The paper's is the mean squared error, right for Gaussian noise.  Photon-limited
images (fluorescence microscopy at a few photons a pixel) have Poisson noise, whose
variance grows with the signal: there the negative Poisson log-likelihood weighs each pixel
by what it can tell.  The loop, the guard, the reports, early stopping and the held-out
validation read the fit only through a :class:`Fidelity` (``RunConfig.fidelity``):

* :meth:`Fidelity.loss` is what is minimised (per member);
* :meth:`Fidelity.fit_psnr` turns it into the fit figure in dB the reports show and the
  guard compares (a fall of ``guard_drop_db`` is a fall whatever the data term);
* :meth:`Fidelity.held_out` and :meth:`Fidelity.held_out_psnr` score held-out pixels, which
  choose the best iterate.

>>> import torch
>>> pred = torch.full((1, 1, 4, 4), 0.5); obs = torch.ones(1, 1, 4, 4)
>>> float(MSE().loss(pred, pred, obs)), round(MSE().fit_psnr(0.01, 1.0), 1)
(0.0, 20.0)
>>> poisson = Poisson(photons_per_unit=100.0)
>>> float(poisson.loss(pred, pred, obs)) == 0.0   # the deviance is 0 at a perfect fit
True
"""

from __future__ import annotations

import math

import torch

from .config import FIDELITIES
from .errors import DIPError
from .operators import psnr_from_mse


class Fidelity:
    """A data term; the default is the paper's mean squared error."""

    name = "mse"

    def loss(self, predicted: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Per member: the data term over the observation grid, 0 where ``observed`` is 0
        (``target`` is the observation times ``observed``)."""
        raise NotImplementedError

    def fit_psnr(self, loss: float, observed_fraction: float, peak: float = 1.0) -> float:
        """The fit in dB from one member's loss (higher is better)."""
        raise NotImplementedError

    def held_out(self, predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 count: torch.Tensor) -> torch.Tensor:
        """Per member: the data term on the held-out pixels (``mask``, ``count`` of them)."""
        raise NotImplementedError

    def held_out_psnr(self, value: float, peak: float = 1.0) -> float:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"fidelity": self.name}


class MSE(Fidelity):
    """The mean squared error of the paper (Gaussian noise); its fit figure is the PSNR on
    the observed pixels."""

    name = "mse"

    def loss(self, predicted, target, observed):
        return ((predicted - target) * observed).square().mean(dim=(1, 2, 3))

    def fit_psnr(self, loss, observed_fraction, peak=1.0):
        return psnr_from_mse(loss / max(observed_fraction, 1e-12)) + 20.0 * math.log10(peak)

    def held_out(self, predicted, target, mask, count):
        return ((predicted - target) * mask).square().sum(dim=(1, 2, 3)) / count

    def held_out_psnr(self, value, peak=1.0):
        return psnr_from_mse(value, peak)


class Poisson(Fidelity):
    """The negative Poisson log-likelihood of photon counts, as the deviance per pixel.

    The engine works in [0, 1] units; ``photons_per_unit`` and ``photons_at_zero`` say how
    many photons a unit and the unit's zero are (:func:`src_core.preparation.prepare` derives them
    from the input's scaling and the camera's gain and offset).  With ``lam`` the photons
    the prediction expects and ``n`` those counted, a pixel's term is
    ``lam - n - n * log(lam / n)`` (0 at ``lam == n``, and ``lam`` where ``n == 0``), which
    differs from the negative log-likelihood by a constant: a perfect fit scores 0.  It is
    divided by ``photons_per_unit``, so a learning rate means about what it means for the MSE
    at any photon count.  The fit figure is ``-10 log10`` of the deviance per observed pixel.
    """

    name = "poisson"
    #: the least expected count: the log of a prediction of 0 photons is kept finite
    FLOOR = 1e-3

    def __init__(self, photons_per_unit: float = 1.0, photons_at_zero: float = 0.0):
        for what, value in (("photons_per_unit", photons_per_unit), ("photons_at_zero", photons_at_zero)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DIPError(f"{what} must be a finite number (got {value!r}).")
        if photons_per_unit <= 0:
            raise DIPError(f"photons_per_unit must be positive (got {photons_per_unit!r}); check the "
                           "camera gain: photons = (value - offset) / gain.")
        self.scale, self.zero = float(photons_per_unit), float(photons_at_zero)

    def _terms(self, predicted, target):
        lam = (predicted * self.scale + self.zero).clamp(min=self.FLOOR)
        n = (target * self.scale + self.zero).clamp(min=0.0)
        return (lam - n - torch.xlogy(n, lam) + torch.xlogy(n, n)) / self.scale

    def loss(self, predicted, target, observed):
        return (self._terms(predicted, target) * observed).mean(dim=(1, 2, 3))

    def fit_psnr(self, loss, observed_fraction, peak=1.0):
        value = loss / max(observed_fraction, 1e-12)
        return float("inf") if value <= 0 else -10.0 * math.log10(value)

    def held_out(self, predicted, target, mask, count):
        return (self._terms(predicted, target) * mask).sum(dim=(1, 2, 3)) / count

    def held_out_psnr(self, value, peak=1.0):
        return float("inf") if value <= 0 else -10.0 * math.log10(value)

    def describe(self):
        return {"fidelity": self.name, "photons_per_unit": self.scale, "photons_at_zero": self.zero}


def make_fidelity(name: str = "mse", photons_per_unit: float = 1.0, photons_at_zero: float = 0.0) -> Fidelity:
    if name == "mse":
        return MSE()
    if name == "poisson":
        return Poisson(photons_per_unit, photons_at_zero)
    raise DIPError(f"fidelity must be one of {FIDELITIES} (got {name!r}).")
