"""Distances from a generator's samples to a known target."""
from __future__ import annotations

import torch

from toy.families import GaussianMixture


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo), V-statistic form.

    Zero iff the distributions agree; x ``[n, d]``, y ``[m, d]``.
    """
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()


def target_nll(target: GaussianMixture, samples: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of samples under the exact target density."""
    return -target.log_prob(samples).mean()
