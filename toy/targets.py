"""Named toy targets (teachers with exact scores). Each entry is data: weights, means and covariances."""
from __future__ import annotations

import math

import torch

from full.errors import ConfigError

from toy.families import Gaussian, GaussianMixture


def _eight_gaussians(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """8 Gaussians on a circle of radius 2 with std 0.2 (the prototype in TOY_FINDINGS.md)."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(torch.ones(8), means, std ** 2 * torch.eye(2).expand(8, 2, 2).clone())


TARGETS = {
    # 2-D, disconnected modes: the classic distillation toy.
    "8gaussians": _eight_gaussians,
    # 2-D, three overlapping modes: a continuous generator can represent it without bridges.
    "overlap2d": lambda: GaussianMixture(torch.tensor([0.5, 0.3, 0.2]),
                                         torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]]),
                                         torch.tensor([[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.6]],
                                                       [[0.4, -0.1], [-0.1, 0.3]]])),
    # 2-D correlated Gaussian: an affine generator can match it exactly and KL is exact.
    "gaussian2d": lambda: Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([[1.0, 0.6], [0.6, 0.8]])),
    # 1-D cases.
    "gaussian1d": lambda: Gaussian(torch.tensor([0.0]), torch.tensor([[1.0]])),
    "mixture1d": lambda: GaussianMixture(torch.tensor([0.6, 0.4]), torch.tensor([[-1.0], [1.5]]),
                                         torch.tensor([[[0.3]], [[0.5]]])),
}


def make_target(name: str) -> GaussianMixture:
    """Build a named target; unknown names raise `ConfigError` listing the known ones."""
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS[name]()
