"""Named toy targets (teachers with exact scores). Each entry is data: weights, means and covariances.

Besides the 1-D and 2-D cases, `gmm<d>d` (e.g. ``gmm2d``, ``gmm16d``, ``gmm64d``) is a seeded mixture of
four Gaussians in d dimensions (`random_mixture`) for studies across dimension.
"""
from __future__ import annotations

import math
import re

import torch

from full.errors import ConfigError

from toy.families import Gaussian, GaussianMixture


def _eight_gaussians(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """8 Gaussians on a circle of radius 2 with std 0.2 (the usual 2-D distillation benchmark)."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(torch.ones(8), means, std ** 2 * torch.eye(2).expand(8, 2, 2).clone())


class EigenMixture(GaussianMixture):
    """A `GaussianMixture` whose exact posterior terms go through each Sigma_k's eigendecomposition.

    With Sigma_k = U_k diag(lambda_k) U_k^T, C_k = a^2 Sigma_k + sigma^2 I = U_k diag(a^2 lambda_k + sigma^2) U_k^T,
    so C_k^{-1}(x - a mu_k) and log det C_k cost O(d^2) per sample and component instead of a Cholesky
    factorisation of a ``[B, K, d, d]`` tensor per call (O(d^3)). Same density, score and denoiser.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, a: float = 1.0):
        super().__init__(weights, means, covs, a)
        eigenvalues, eigenvectors = torch.linalg.eigh(covs)
        self.register_buffer("eigenvalues", eigenvalues)      # [K, d]
        self.register_buffer("eigenvectors", eigenvectors)    # [K, d, d], columns are eigenvectors

    def _posterior_terms(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        c = self.a ** 2 * self.eigenvalues + sigma ** 2                          # [B|1, K, d]: eigenvalues of C_k
        diff = x[:, None, :] - self.a * self.means                               # [B, K, d]
        rotated = torch.einsum("bkd,kde->bke", diff, self.eigenvectors)          # U_k^T (x - a mu_k)
        solved = torch.einsum("bke,kde->bkd", rotated / c, self.eigenvectors)    # C_k^{-1} (x - a mu_k)
        log_normal = -0.5 * ((rotated ** 2 / c).sum(-1) + c.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return torch.log(self.weights) + log_normal, solved

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """The exact denoiser sum_k r_k (mu_k + a Sigma_k C_k^{-1} (x - a mu_k)), as in `GaussianMixture`, with
        Sigma_k applied by einsum (a broadcast ``[K, d, d] @ [B, K, d, 1]`` matmul is about 100x slower)."""
        log_joint, solved = self._posterior_terms(x, sigma)
        component_means = self.means + self.a * torch.einsum("kde,bke->bkd", self.covs, solved)
        return (log_joint.softmax(-1).unsqueeze(-1) * component_means).sum(1)


def random_mixture(dim: int, components: int = 4, radius: float = 1.0, std_range: tuple[float, float] = (0.3, 0.6),
                   seed: int = 0, dtype: torch.dtype | None = None) -> EigenMixture:
    """`components` equally weighted Gaussians in `dim` dimensions with overlapping modes, drawn from `seed`.

    Means: `radius` times independent uniform unit vectors, so in high dimension two means are about
    radius * sqrt(2) = 1.4 apart. Covariances: a random rotation (QR of a Gaussian matrix) of per-axis
    standard deviations drawn uniformly from `std_range`. Two means are then about three component standard
    deviations apart: distinct modes joined by mass, which a continuous one-step generator can represent
    (well-separated modes force it to leave mass on bridges between them, whatever the loss). The draws are
    made in float64 and cast to `dtype` (default: torch's default dtype).
    """
    rng = torch.Generator().manual_seed(1_000 * seed + dim)
    directions = torch.randn(components, dim, generator=rng, dtype=torch.float64)
    means = radius * directions / directions.norm(dim=1, keepdim=True)
    rotations = torch.linalg.qr(torch.randn(components, dim, dim, generator=rng, dtype=torch.float64))[0]
    low, high = std_range
    stds = low + (high - low) * torch.rand(components, dim, generator=rng, dtype=torch.float64)
    covs = rotations @ torch.diag_embed(stds ** 2) @ rotations.transpose(1, 2)
    covs = (covs + covs.transpose(1, 2)) / 2
    dtype = dtype or torch.get_default_dtype()
    return EigenMixture(torch.ones(components, dtype=dtype), means.to(dtype), covs.to(dtype))


STUDY_DIMENSIONS = (2, 8, 16, 32, 64)
_MIXTURE_NAME = re.compile(r"gmm([1-9][0-9]*)d")

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
    # d-D, four overlapping Gaussians at random means (`random_mixture`); any gmm<d>d name works.
    **{f"gmm{d}d": (lambda d=d: random_mixture(d)) for d in STUDY_DIMENSIONS},
}


def make_target(name: str) -> GaussianMixture:
    """Build a named target; unknown names raise `ConfigError` listing the known ones."""
    if name in TARGETS:
        return TARGETS[name]()
    match = _MIXTURE_NAME.fullmatch(name)
    if match and int(match.group(1)) <= 4096:
        return random_mixture(int(match.group(1)))
    raise ConfigError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)} (or gmm<d>d for any d)")
