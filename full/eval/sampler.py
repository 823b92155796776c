"""EDM's sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

`karras_schedule` is Eq. 5 (`full.method.losses.karras_ramp` at u = i/(N-1)) for i < N, followed by sigma_N = 0. `edm_sampler` is Algorithm 2: Heun's 2nd-order method on the
probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma, with an Euler last step (NFE = 2N - 1),
and optional stochastic "churn" that raises sigma_i to sigma_hat = sigma_i (1 + gamma_i) with fresh noise,
gamma_i = min(S_churn / N, sqrt(2) - 1) for S_min <= sigma_i <= S_max. Arithmetic is in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from full.errors import ConfigError
from full.method.losses import karras_ramp


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler settings; `SAMPLER_PRESETS` holds the ones EDM used for its reported FIDs."""

    num_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = math.inf
    S_noise: float = 1.0

    @property
    def nfe(self) -> int:
        """Network evaluations per sample: two per Heun step, one for the final Euler step."""
        return 2 * self.num_steps - 1


SAMPLER_PRESETS = {
    "32x32": SamplerConfig(num_steps=18),  # CIFAR-10, 35 NFE
    "64x64": SamplerConfig(num_steps=40),  # FFHQ, AFHQv2, 79 NFE
    "imagenet64": SamplerConfig(num_steps=256, S_churn=40, S_min=0.05, S_max=50, S_noise=1.003),  # 511 NFE
}


def karras_schedule(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """The N+1 noise levels of Karras et al. (2022) Eq. 5 in float64: N decreasing sigmas, then 0."""
    if num_steps < 1:
        raise ConfigError(f"the sampler needs at least 1 step, got {num_steps}")
    ramp = torch.arange(num_steps, dtype=torch.float64) / max(num_steps - 1, 1)
    return torch.cat([karras_ramp(ramp, sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def edm_sampler(net, latents: torch.Tensor, class_labels: torch.Tensor | None = None, num_steps: int = 18,
                sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, S_churn: float = 0.0,
                S_min: float = 0.0, S_max: float = math.inf, S_noise: float = 1.0,
                rng: torch.Generator | None = None) -> torch.Tensor:
    """Karras et al. (2022) Algorithm 2 from ``x_0 = sigma_0 * latents``; returns float64 samples.

    ``net(x, sigma, class_labels)`` is a denoiser D(x; sigma) called with a 0-d float64 sigma. The range
    is clipped to ``net.sigma_min``/``net.sigma_max`` and sigmas snapped with ``net.round_sigma`` when the
    network has them. Churn noise is drawn from ``rng`` (the global RNG if None); with
    ``S_churn = 0`` the sampler is deterministic.
    """
    sigma_min = max(sigma_min, getattr(net, "sigma_min", sigma_min))
    sigma_max = min(sigma_max, getattr(net, "sigma_max", sigma_max))
    round_sigma = getattr(net, "round_sigma", lambda s: s)
    sigmas = karras_schedule(num_steps, sigma_min, sigma_max, rho).to(latents.device)
    sigmas = torch.cat([round_sigma(sigmas[:-1]), sigmas[-1:]])

    x_next = latents.to(torch.float64) * sigmas[0]
    for i, (s_cur, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        x_cur = x_next
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= s_cur <= S_max else 0.0
        s_hat = round_sigma(s_cur + gamma * s_cur)
        if gamma > 0:
            noise = torch.randn(x_cur.shape, generator=rng, dtype=x_cur.dtype, device=x_cur.device)
            x_cur = x_cur + (s_hat ** 2 - s_cur ** 2).sqrt() * S_noise * noise
        d_cur = (x_cur - net(x_cur, s_hat, class_labels).to(torch.float64)) / s_hat
        x_next = x_cur + (s_next - s_hat) * d_cur
        if i < num_steps - 1:  # Heun correction: average the slopes at both ends
            d_next = (x_next - net(x_next, s_next, class_labels).to(torch.float64)) / s_next
            x_next = x_cur + (s_next - s_hat) * (0.5 * d_cur + 0.5 * d_next)
    return x_next
