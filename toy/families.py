"""Closed-form data families: Gaussians and Gaussian mixtures in d dimensions.

Under the forward process x_t = a x_0 + sigma eps (a = 1 is EDM's), a mixture
p(x_0) = sum_k pi_k N(mu_k, Sigma_k) stays a mixture at every noise level:

    p(x_t) = sum_k pi_k N(a mu_k, C_k),            C_k = a^2 Sigma_k + sigma^2 I.

With responsibilities r_k(x_t) proportional to pi_k N(x_t; a mu_k, C_k), the exact score is
grad log p(x_t) = -sum_k r_k C_k^{-1} (x_t - a mu_k) and the exact denoiser (posterior mean) is

    E[x_0 | x_t] = sum_k r_k (mu_k + a Sigma_k C_k^{-1} (x_t - a mu_k)).

Every quantity is a differentiable torch expression, so a family can stand in as a perfect
teacher f_phi, or, for a Gaussian generator, as the perfect fake score f_psi*. Calling a family
as ``family(x_t, sigma)`` returns the denoiser, the same call signature as an EDM network.
Shapes: x is ``[B, d]``; sigma is a scalar, ``[B]`` or ``[B, 1]``.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _sigma_column(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma as a ``[B or 1, 1, 1, 1]`` tensor for broadcasting over ``[B, K, d, d]``."""
    return torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


class GaussianMixture(nn.Module):
    """p(x_0) = sum_k weights_k N(means_k, covs_k); weights ``[K]``, means ``[K, d]``, covs ``[K, d, d]``.

    The parameters are stored as given (no copy), so a mixture built from tensors that require
    grad is differentiable in its parameters too.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, a: float = 1.0):
        super().__init__()
        weights, means, covs = (torch.as_tensor(v, dtype=torch.get_default_dtype()) if not torch.is_tensor(v) else v
                                for v in (weights, means, covs))
        if means.ndim != 2 or covs.shape != (*means.shape, means.shape[1]) or weights.shape != means.shape[:1]:
            raise ValueError(f"inconsistent mixture shapes: weights {tuple(weights.shape)}, "
                             f"means {tuple(means.shape)}, covs {tuple(covs.shape)}")
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means)
        self.register_buffer("covs", covs)
        self.a = a

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _posterior_terms(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component log pi_k N(x; a mu_k, C_k) ``[B, K]`` and C_k^{-1}(x - a mu_k) ``[B, K, d]``."""
        d = self.dim
        C = self.a ** 2 * self.covs + _sigma_column(sigma, x) ** 2 * torch.eye(d, dtype=x.dtype, device=x.device)
        L = torch.linalg.cholesky(C)                                      # [B|1, K, d, d]
        diff = (x[:, None, :] - self.a * self.means).unsqueeze(-1)        # [B, K, d, 1]
        solved = torch.cholesky_solve(diff, L).squeeze(-1)                # [B, K, d]
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        log_normal = -0.5 * ((diff.squeeze(-1) * solved).sum(-1) + logdet + d * math.log(2 * math.pi))
        return torch.log(self.weights) + log_normal, solved

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p(x_t) at noise level sigma, ``[B]``."""
        log_joint, _ = self._posterior_terms(x, sigma)
        return torch.logsumexp(log_joint, dim=-1)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """grad_x log p(x_t) in closed form, ``[B, d]``."""
        log_joint, solved = self._posterior_terms(x, sigma)
        return -(log_joint.softmax(-1).unsqueeze(-1) * solved).sum(1)

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """The exact denoiser E[x_0 | x_t] (posterior mean), ``[B, d]``."""
        log_joint, solved = self._posterior_terms(x, sigma)
        component_means = self.means + self.a * (self.covs @ solved.unsqueeze(-1)).squeeze(-1)
        return (log_joint.softmax(-1).unsqueeze(-1) * component_means).sum(1)

    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """n exact draws of x_0, ``[n, d]``."""
        k = torch.multinomial(self.weights.detach(), n, replacement=True, generator=rng)
        z = torch.randn(n, self.dim, generator=rng, dtype=self.means.dtype)
        L = torch.linalg.cholesky(self.covs)
        return self.means[k] + (L[k] @ z.unsqueeze(-1)).squeeze(-1)

    def sample_noisy(self, n: int, sigma: float, rng: torch.Generator | None = None) -> torch.Tensor:
        """n draws of x_t = a x_0 + sigma eps."""
        x0 = self.sample(n, rng)
        return self.a * x0 + sigma * torch.randn(x0.shape, generator=rng, dtype=x0.dtype)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Overall mean ``[d]`` and covariance ``[d, d]`` of x_0."""
        w = self.weights[:, None]
        mean = (w * self.means).sum(0)
        centred = self.means - mean
        cov = (self.weights[:, None, None] * (self.covs + centred[:, :, None] * centred[:, None, :])).sum(0)
        return mean, cov


class Gaussian(GaussianMixture):
    """N(mean, cov) in d dimensions: a one-component mixture with the Gaussian's own accessors."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, a: float = 1.0):
        mean = torch.as_tensor(mean, dtype=torch.get_default_dtype()) if not torch.is_tensor(mean) else mean
        cov = torch.as_tensor(cov, dtype=mean.dtype) if not torch.is_tensor(cov) else cov
        super().__init__(torch.ones(1, dtype=mean.dtype), mean.reshape(1, -1), cov.reshape(1, *cov.shape[-2:]), a)

    @property
    def mean(self) -> torch.Tensor:
        return self.means[0]

    @property
    def cov(self) -> torch.Tensor:
        return self.covs[0]


def gaussian_kl(p: Gaussian, q: Gaussian) -> torch.Tensor:
    """KL(N(m_p, S_p) || N(m_q, S_q)) = 1/2 [tr(S_q^-1 S_p) + dm^T S_q^-1 dm - d + ln det S_q / det S_p]."""
    d = p.dim
    Lq = torch.linalg.cholesky(q.cov)
    dm = (q.mean - p.mean).unsqueeze(-1)
    trace = torch.cholesky_solve(p.cov, Lq).diagonal().sum()
    maha = (dm * torch.cholesky_solve(dm, Lq)).sum()
    logdet = 2 * torch.log(Lq.diagonal()).sum() - torch.logdet(p.cov)
    return 0.5 * (trace + maha - d + logdet)
