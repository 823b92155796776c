"""Distances from a generator's samples to a known target."""
from __future__ import annotations

import torch

from toy.families import GaussianMixture


def energy_distance(x: torch.Tensor, y: torch.Tensor, yy: torch.Tensor | None = None) -> torch.Tensor:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo), V-statistic form.

    Zero iff the distributions agree; x ``[n, d]``, y ``[m, d]``. `yy` is E|Y - Y'| of a fixed reference set
    (`self_distance(y)`), so repeated evaluations against it skip that ``m x m`` term; the value is the same.
    Two independent n-sample sets of one distribution give about 2 E|X - X'| / n (the V-statistic's bias),
    not 0: `energy_floor` measures it.
    """
    yy = self_distance(y) if yy is None else yy
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - yy


def self_distance(y: torch.Tensor) -> torch.Tensor:
    """E|Y - Y'| over all pairs of y ``[m, d]`` (diagonal included, as in `energy_distance`)."""
    return torch.cdist(y, y).mean()


def energy_floor(target: GaussianMixture, n: int, repeats: int = 5, seed: int = 0) -> float:
    """The energy distance between two independent n-sample sets of the target, averaged over `repeats` pairs:
    what a perfect sampler scores against n reference samples (the distance's floor at this n)."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        values = [energy_distance(target.sample(n, rng), target.sample(n, rng)).item() for _ in range(repeats)]
    return sum(values) / repeats


def off_mode_fraction(target: GaussianMixture, samples: torch.Tensor, radius: float = 3.0) -> torch.Tensor:
    """The share of samples farther than `radius` standard deviations (Mahalanobis distance) from every component
    of the target: for a mixture of separated modes, the mass a generator leaves on the bridges between them.
    Exact target samples give about P(chi^2_d > radius^2), e.g. exp(-4.5) = 1.1 % in 2-D at radius 3."""
    with torch.no_grad():
        diff = samples[:, None, :] - target.means[None].to(samples.dtype)
        solved = torch.linalg.solve(target.covs.to(samples.dtype)[None], diff.unsqueeze(-1)).squeeze(-1)
        nearest = (diff * solved).sum(-1).min(dim=1).values
    return (nearest > radius ** 2).float().mean()


def target_nll(target: GaussianMixture, samples: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of samples under the exact target density."""
    return -target.log_prob(samples).mean()


def steps_to_threshold(eval_steps: list[int], distances: list[float], threshold: float) -> int | None:
    """The first evaluated step whose distance is at or below `threshold`; None if there is none."""
    return next((step for step, d in zip(eval_steps, distances) if d <= threshold), None)
