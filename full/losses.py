"""The SiD losses, written once for `toy` and `full`.

This module imports only torch. Every function works on any tensor shape
``[B, ...]``: 2-D toy points ``[B, d]`` or images ``[B, C, H, W]``. Denoisers are
plain callables ``f(x_t, sigma, **kwargs) -> E[x_0 | x_t]`` where ``sigma`` has
shape ``[B, 1, ..., 1]``, so a toy closed-form denoiser and an EDM network are
called the same way.

Notation (Zhou et al., ICML 2024, "Score identity Distillation"):
  x_g = G_theta(z)                 generator sample
  x_t = x_g + sigma_t * eps        forward diffusion with a_t = 1 (EDM/VE form)
  f_phi(x_t, sigma)                pretrained teacher denoiser (frozen)
  f_psi(x_t, sigma)                fake-score denoiser, fitted to p_theta
  L1 = ||f_phi - f_psi||^2                        naive loss (paper Eq. 9)
  L2 = (f_phi - f_psi)^T (f_phi - x_g)            projected loss (Eq. 17)
  SiD = L2 - alpha * L1                           generator loss (Eq. 22)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Denoiser = Callable[..., torch.Tensor]

# EDM training distribution of sigma and data scale (Karras et al. 2022, Table 1).
P_MEAN = -1.2
P_STD = 1.2
SIGMA_DATA = 0.5
# Karras et al. (2022) Eq. 5 schedule constants used by SiD's generator step.
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
T_MAX = 800
# Lower clip of SiD's per-sample normaliser (official code).
WEIGHT_FLOOR = 1e-5


def _per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the batch: ``[B, ...] -> [B]``."""
    return x.flatten(1).sum(dim=1)


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def _as_batch_sigma(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample sigma ``[B]`` to ``[B, 1, ..., 1]`` so it broadcasts over ``like``."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(like.shape[0])
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


# --------------------------------------------------------------------------- noise levels


def karras_sigma(t: torch.Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 rho: float = RHO) -> torch.Tensor:
    """Karras et al. (2022) Eq. 5 with t in [0, 1] read backwards, as in SiD's code:

    sigma(t) = (sigma_max^(1/rho) + (1 - t) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,

    so t = 0 gives sigma_min and t = 1 gives sigma_max.
    """
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + (1 - t) * (b - a)) ** rho


def sample_generator_sigma(batch: int, t_max: float = T_MAX, *, device=None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """sigma for SiD's generator step: t ~ U[0, t_max/1000], then `karras_sigma` (shape ``[B]``).

    With t_max = 800, sigma lies in [0.002, 24.41].
    """
    t = torch.rand(batch, device=device, generator=generator) * (t_max / 1000)
    return karras_sigma(t)


def sample_denoising_sigma(batch: int, P_mean: float = P_MEAN, P_std: float = P_STD, *, device=None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM's training noise levels: ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1)."""
    return (P_mean + P_std * torch.randn(batch, device=device, generator=generator)).exp()


def edm_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


# --------------------------------------------------------------------------- fake-score / teacher fit


def denoising_loss(f: Denoiser, x_0: torch.Tensor, sigma: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None, *, sigma_data: float = SIGMA_DATA,
                   P_mean: float = P_MEAN, P_std: float = P_STD, generator: torch.Generator | None = None,
                   **net_kwargs) -> torch.Tensor:
    """EDM denoising score matching (Karras et al. 2022, Eq. 2 with the weights of Table 1).

    Per-sample loss ``[B]``: lambda(sigma) * ||f(x_0 + sigma n, sigma) - x_0||^2 with
    ln sigma ~ N(P_mean, P_std^2). Used to fit f_psi to (detached) generator samples, and to
    train small teachers on data. ``sigma``/``noise`` may be passed to make the call deterministic.
    """
    if sigma is None:
        sigma = sample_denoising_sigma(x_0.shape[0], P_mean, P_std, device=x_0.device, generator=generator)
    sigma = _as_batch_sigma(sigma, x_0)
    if noise is None:
        noise = torch.randn(x_0.shape, device=x_0.device, dtype=x_0.dtype, generator=generator)
    denoised = f(x_0 + sigma * noise, sigma, **net_kwargs)
    return edm_weight(sigma.flatten(), sigma_data) * _per_sample_sum((denoised - x_0) ** 2)


# --------------------------------------------------------------------------- generator objectives
# Each takes the two denoiser outputs y_phi = f_phi(x_t), y_psi = f_psi(x_t) and the generator
# sample x_g, and returns a per-sample loss [B] whose gradient w.r.t. the generator is the method's.


def naive_loss(y_phi: torch.Tensor, y_psi: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
    """L1 = ||f_phi - f_psi||^2, the model-based Fisher divergence in x_0 units (paper Eq. 9).

    With f_psi held fixed its gradient is blind to where x_g sits: Proposition 4 shows it can be zero.
    """
    return _per_sample_sum((y_phi - y_psi) ** 2)


def projected_loss(y_phi: torch.Tensor, y_psi: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
    """L2 = (f_phi - f_psi)^T (f_phi - x_g), projected score matching (Theorem 5, Eq. 17).

    One factor of the Fisher divergence is replaced by its projection onto grad log q(x_t | x_g).
    """
    return _per_sample_sum((y_phi - y_psi) * (y_phi - x_g))


def sid_loss(y_phi: torch.Tensor, y_psi: torch.Tensor, x_g: torch.Tensor, alpha: float = 1.2) -> torch.Tensor:
    """SiD's generator loss L2 - alpha * L1 = (f_phi - f_psi)^T ((f_phi - x_g) - alpha (f_phi - f_psi)) (Eq. 22)."""
    return projected_loss(y_phi, y_psi, x_g) - alpha * naive_loss(y_phi, y_psi, x_g)


def diff_instruct_loss(y_phi: torch.Tensor, y_psi: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
    """Diff-Instruct (Luo et al. 2023): the score difference pushed through x_g.

    grad_theta = E[w(sigma) (S_psi - S_phi)(x_t) dx_t/dtheta]. With Tweedie,
    S_psi - S_phi = (f_psi - f_phi) / sigma^2, and with w(sigma) = sigma^2 the surrogate is
    sg(f_psi - f_phi)^T x_g. No gradient flows through the denoisers.
    """
    return _per_sample_sum((y_psi - y_phi).detach() * x_g)


def dmd_loss(y_phi: torch.Tensor, y_psi: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
    """DMD's distribution-matching gradient (Yin et al. 2024, Eq. 7-8).

    The same score difference as Diff-Instruct, normalised per sample by mean|x_g - f_phi|:
    grad_x_g = (f_psi - f_phi) / mean|x_g - f_phi|, applied as the surrogate sg(grad)^T x_g.
    """
    grad = (y_psi - y_phi) / sid_normaliser(x_g, y_phi).reshape(-1, *([1] * (x_g.ndim - 1)))
    return _per_sample_sum(grad.detach() * x_g)


def sid_normaliser(x_g: torch.Tensor, y_phi: torch.Tensor) -> torch.Tensor:
    """SiD's per-sample weight denominator mean|x_g - f_phi| (no gradient, clipped at 1e-5) -> ``[B]``."""
    return _per_sample_mean((x_g - y_phi).abs()).detach().clamp_min(WEIGHT_FLOOR)


@dataclass(frozen=True)
class Objective:
    """A generator objective: the per-sample loss and whether SiD's 1/mean|x_g - f_phi| weight applies."""
    loss: Callable[..., torch.Tensor]
    normalised: bool
    uses_alpha: bool = False


OBJECTIVES: dict[str, Objective] = {
    "sid": Objective(sid_loss, normalised=True, uses_alpha=True),
    "naive": Objective(naive_loss, normalised=True),
    "projected": Objective(projected_loss, normalised=True),
    "diff_instruct": Objective(diff_instruct_loss, normalised=False),
    "dmd": Objective(dmd_loss, normalised=False),
}


def generator_loss(f_phi: Denoiser, f_psi: Denoiser, x_g: torch.Tensor, *, alpha: float = 1.2,
                   t_max: float = T_MAX, objective: str = "sid", sigma: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   **net_kwargs) -> torch.Tensor:
    """Per-sample generator loss ``[B]`` of SiD (Algorithm 1, generator update) or of a peer objective.

    x_t = x_g + sigma * noise with sigma from `sample_generator_sigma` unless given. Both denoisers
    are evaluated at x_t and **no stop-gradient is applied**: for SiD the gradient reaches x_g both
    directly and through the inputs of f_phi and f_psi (their parameters stay frozen by the caller).
    For SiD, L1 and L2 the loss is divided per sample by mean|x_g - f_phi| (detached), as in the
    official code. The caller scales and reduces (e.g. ``.sum() * 100 / batch``).
    """
    spec = OBJECTIVES[objective]
    if sigma is None:
        sigma = sample_generator_sigma(x_g.shape[0], t_max, device=x_g.device, generator=generator)
    sigma = _as_batch_sigma(sigma, x_g)
    if noise is None:
        noise = torch.randn(x_g.shape, device=x_g.device, dtype=x_g.dtype, generator=generator)
    x_t = x_g + sigma * noise
    y_phi = f_phi(x_t, sigma, **net_kwargs)
    y_psi = f_psi(x_t, sigma, **net_kwargs)
    loss = spec.loss(y_phi, y_psi, x_g, alpha) if spec.uses_alpha else spec.loss(y_phi, y_psi, x_g)
    if spec.normalised:
        loss = loss / sid_normaliser(x_g, y_phi)
    return loss
