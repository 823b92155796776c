"""SiD's one-step generator: x_g = G(sigma_init z, sigma_init) with z ~ N(0, I) (Zhou et al. 2024, Sec. 4).

G is a copy of the teacher's denoiser evaluated once at the fixed noise level sigma_init.
"""
from __future__ import annotations

import torch

SIGMA_INIT = 2.5  # the official code's init_sigma, used by every published preset


def one_step(G: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None, sigma_init: float = SIGMA_INIT,
             **net_kwargs) -> torch.Tensor:
    """x_g = G(sigma_init z, sigma_init, labels) for latents z ``[B, C, H, W]``."""
    sigma = torch.full((z.shape[0],), sigma_init, device=z.device)
    return G(sigma_init * z, sigma, labels, **net_kwargs)
