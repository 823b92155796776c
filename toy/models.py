"""Toy generators G_theta(z) and the MLP fake-score denoiser f_psi used by toy distillation."""
from __future__ import annotations

import math

import torch
from torch import nn

from toy.families import Gaussian


class AffineGenerator(nn.Module):
    """x_g = A z + b with z ~ N(0, I): p_theta = N(b, A A^T), so its exact fake score is known."""

    def __init__(self, dim: int, scale: float = 0.5, shift: float = -1.0):
        super().__init__()
        self.A = nn.Parameter(scale * torch.eye(dim))
        self.b = nn.Parameter(torch.full((dim,), shift))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T + self.b

    def distribution(self) -> Gaussian:
        """p_theta as a differentiable `Gaussian` (detach it to use it as a frozen f_psi*)."""
        return Gaussian(self.b, self.A @ self.A.T + 1e-6 * torch.eye(self.b.numel()))


class MLPGenerator(nn.Module):
    """x_g = MLP(z), z ~ N(0, I_d): dim -> hidden -> hidden -> dim with SiLU."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDenoiser(nn.Module):
    """f_psi(x_t, sigma) = c_skip x_t + c_out F(c_in x_t, c_noise): EDM preconditioning
    (Karras et al. 2022, Table 1) around an MLP with a Fourier embedding of c_noise = ln(sigma)/4."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, sigma_data: float = 0.5, embed: int = 16):
        super().__init__()
        self.sigma_data = sigma_data
        self.register_buffer("freqs", torch.arange(1, embed // 2 + 1, dtype=torch.float32) * math.pi / 2)
        layers, width = [], dim + embed
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[0], 1)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        angle = (sigma.log() / 4) * self.freqs
        emb = torch.cat([angle.cos(), angle.sin()], dim=1)
        return c_skip * x + c_out * self.net(torch.cat([c_in * x, emb], dim=1))


GENERATORS = {"affine": AffineGenerator, "mlp": MLPGenerator}
