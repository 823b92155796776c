"""Toy generators G_theta(z), the MLP denoiser used as the fake score f_psi, and `fit_denoiser`, which fits
that MLP to a target's samples to make an imperfect (learned) teacher f_phi."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from full.method.losses import DenoisingLoss
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
    (Karras et al. 2022, Table 1) around an MLP with a Fourier embedding of c_noise = ln(sigma)/4.

    As SiDA's fake score (Zhou et al. 2025) it is also the discriminator: the mean of its last hidden layer's
    features is the logit ([B, 1]), as the channel mean of a U-Net's last encoder block is for images."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, sigma_data: float = 0.5, embed: int = 16):
        super().__init__()
        self.sigma_data = sigma_data
        self.register_buffer("freqs", torch.arange(1, embed // 2 + 1, dtype=torch.float32) * math.pi / 2)
        layers, width = [], dim + embed
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def _features(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, last hidden layer's features) at x_t and sigma."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[0], 1)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        angle = (sigma.log() / 4) * self.freqs
        emb = torch.cat([angle.cos(), angle.sin()], dim=1)
        return c_skip, c_out, self.net[:-1](torch.cat([c_in * x, emb], dim=1))

    def forward(self, x: torch.Tensor, sigma, class_labels=None, return_logits: bool = False):
        c_skip, c_out, h = self._features(x, sigma)
        denoised = c_skip * x + c_out * self.net[-1](h)
        return (denoised, h.mean(dim=1, keepdim=True)) if return_logits else denoised

    def logits(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """The discriminator logit [B, 1] alone."""
        return self._features(x, sigma)[2].mean(dim=1, keepdim=True)


GENERATORS = {"affine": AffineGenerator, "mlp": MLPGenerator}


def fit_denoiser(sample: Callable[[int, torch.Generator], torch.Tensor], dim: int, *, steps: int, hidden: int = 128,
                 lr: float = 1e-3, batch: int = 512, sigma_data: float = 0.5, seed: int = 0,
                 losses: list[float] | None = None) -> MLPDenoiser:
    """An `MLPDenoiser` fitted by Adam to fresh draws ``sample(batch, rng)`` with EDM's denoising loss
    (Karras et al. 2022, Eq. 2; `DenoisingLoss`), the way a teacher is trained on data and f_psi on x_g.

    The result is frozen (``requires_grad=False``, eval mode). Its initial weights and training noise come
    from `seed` alone (the global RNG state is saved and restored), so a fit is reproducible and does not
    shift the draws of whatever runs after it. The batch-mean loss of every step is appended to `losses`.
    """
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MLPDenoiser(dim, hidden, sigma_data=sigma_data)
    objective = DenoisingLoss(sigma_data=sigma_data)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = objective(net, sample(batch, rng), rng=rng)["loss"].mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if losses is not None:
            losses.append(loss.item())
    return net.requires_grad_(False).eval()
