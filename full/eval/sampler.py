"""EDM's sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

`karras_schedule` is Eq. 5 (`full.method.losses.karras_ramp` at u = i/(N-1)) for i < N, followed by
sigma_N = 0. `edm_sampler` is Algorithm 2: Heun's 2nd-order method on the probability-flow ODE
dx/dsigma = (x - D(x; sigma)) / sigma, with an Euler last step (NFE = 2N - 1), and optional stochastic
"churn" that raises sigma_i to sigma_hat = sigma_i (1 + gamma_i) with fresh noise,
gamma_i = min(S_churn / N, sqrt(2) - 1) for S_min <= sigma_i <= S_max. Arithmetic is in float64.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from full.errors import ConfigError
from full.method.losses import karras_ramp
from full.options import NONNEGATIVE, POSITIVE, requirement


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of `edm_sampler`; `SAMPLER_PRESETS` holds the ones EDM used for its reported FIDs. Run one with
    ``config.sample(net, latents, class_labels, rng)``."""

    num_steps: int = 18         # Heun steps N (NFE = 2N - 1).
    sigma_min: float = 0.002    # Lowest noise level, before the final step to 0.
    sigma_max: float = 80.0     # Highest noise level; x_0 = sigma_max * latents.
    rho: float = 7.0            # Schedule curvature (Eq. 5).
    S_churn: float = 0.0        # Total stochasticity; 0 = the deterministic ODE sampler.
    S_min: float = 0.0          # Churn only for sigma in [S_min, S_max].
    S_max: float = math.inf
    S_noise: float = 1.0        # Scale of the churn noise (slightly above 1 offsets detail loss).

    @property
    def nfe(self) -> int:
        """Network evaluations per sample: two per Heun step, one for the final Euler step."""
        return 2 * self.num_steps - 1

    @property
    def stochastic(self) -> bool:
        return self.S_churn > 0

    def validate(self) -> "SamplerConfig":
        """Raise `ConfigError` (one line) for settings that cannot sample."""
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ConfigError(f"--steps {self.num_steps!r}: the sampler needs a whole number of steps >= 1")
        rules = ((("sigma_min", "sigma_max", "rho", "S_noise"), POSITIVE), (("S_churn", "S_min"), NONNEGATIVE))
        for names, check in rules:
            for name in names:
                message = requirement(float(getattr(self, name)), check)
                if message:
                    raise ConfigError(f"sampler setting {name} {getattr(self, name)!r} is not allowed; {message}")
        if math.isnan(self.S_max) or self.S_max < self.S_min or self.sigma_min >= self.sigma_max:
            raise ConfigError(f"the sampler needs sigma_min < sigma_max and S_min <= S_max, got {self}")
        return self

    def with_steps(self, num_steps: int | None) -> "SamplerConfig":
        """This config with `num_steps` Heun steps (None keeps them), validated."""
        return (self if num_steps is None else dataclasses.replace(self, num_steps=num_steps)).validate()

    def sample(self, net, latents: torch.Tensor, class_labels: torch.Tensor | None = None,
               rng: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """`edm_sampler` with these settings."""
        return edm_sampler(net, latents, class_labels, rng=rng, **dataclasses.asdict(self))


SAMPLER_PRESETS = {
    "32x32": SamplerConfig(num_steps=18),  # CIFAR-10, 35 NFE
    "64x64": SamplerConfig(num_steps=40),  # FFHQ, AFHQv2, 79 NFE
    "imagenet64": SamplerConfig(num_steps=256, S_churn=40, S_min=0.05, S_max=50, S_noise=1.003),  # 511 NFE
}
DEFAULT_SAMPLER = "32x32"  # EDM's generate.py default: 18 deterministic steps


def sampler_config(preset: str | None = None, steps: int | None = None) -> SamplerConfig:
    """The `SAMPLER_PRESETS` entry `preset` (default: 18 deterministic steps) with `steps` Heun steps if given;
    `ConfigError` names the option for an unknown preset or a step count below 1."""
    name = DEFAULT_SAMPLER if preset is None else preset
    if name not in SAMPLER_PRESETS:
        raise ConfigError(f"--sampler {preset!r} is not a sampler preset; use one of {', '.join(SAMPLER_PRESETS)}")
    return SAMPLER_PRESETS[name].with_steps(steps)


def karras_schedule(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """The N+1 noise levels of Karras et al. (2022) Eq. 5 in float64: N decreasing sigmas, then 0."""
    if num_steps < 1:
        raise ConfigError(f"the sampler needs at least 1 step, got {num_steps}")
    ramp = torch.arange(num_steps, dtype=torch.float64) / max(num_steps - 1, 1)
    return torch.cat([karras_ramp(ramp, sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64)])


def _randn_like(x: torch.Tensor, rng: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like `x`: from one generator, or row i from the i-th of a sequence."""
    if rng is None or isinstance(rng, torch.Generator):
        return torch.randn(x.shape, generator=rng, dtype=x.dtype, device=x.device)
    if len(rng) != len(x):
        raise ValueError(f"{len(rng)} generators for a batch of {len(x)}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=x.device) for g in rng])


@torch.no_grad()
def edm_sampler(net, latents: torch.Tensor, class_labels: torch.Tensor | None = None, num_steps: int = 18,
                sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, S_churn: float = 0.0,
                S_min: float = 0.0, S_max: float = math.inf, S_noise: float = 1.0,
                rng: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """Karras et al. (2022) Algorithm 2 from ``x_0 = sigma_0 * latents``; returns float64 samples.

    ``net(x, sigma, class_labels)`` is a denoiser D(x; sigma) called with a 0-d float64 sigma. The range
    is clipped to ``net.sigma_min``/``net.sigma_max`` and sigmas snapped with ``net.round_sigma`` when the
    network has them. Churn noise is drawn from ``rng``: one generator for the batch, or one generator per
    sample (row i from ``rng[i]``, so a sample's noise does not depend on its batch; NVlabs/edm
    ``generate.py`` does this with its ``StackedRandomGenerator``), or the global RNG if None. With
    ``S_churn = 0`` the sampler is deterministic and draws nothing.
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
            x_cur = x_cur + (s_hat ** 2 - s_cur ** 2).sqrt() * S_noise * _randn_like(x_cur, rng)
        d_cur = (x_cur - net(x_cur, s_hat, class_labels).to(torch.float64)) / s_hat
        x_next = x_cur + (s_next - s_hat) * d_cur
        if i < num_steps - 1:  # Heun correction: average the slopes at both ends
            d_next = (x_next - net(x_next, s_next, class_labels).to(torch.float64)) / s_next
            x_next = x_cur + (s_next - s_hat) * (0.5 * d_cur + 0.5 * d_next)
    return x_next
