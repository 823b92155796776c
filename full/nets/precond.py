"""EDM's preconditioning wrappers, weight-compatible with NVlabs/edm ``training/networks.py``.

Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative Models", Eq. 7:

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

with the four choices of Table 1 (VP, VE, iDDPM and EDM). Each class overrides `coefficients`; the
call is shared. Constructor signatures and defaults equal EDM's, because official checkpoints record
only the keyword arguments that were passed. The inner U-Net is ``self.model`` (keys ``model.*``),
chosen from `full.nets.edm.ARCHITECTURES`.

Precision: inputs, sigma and the output are fp32. The U-Net runs in reduced precision only on CUDA,
when ``use_fp16`` (float16) or the keyword-only ``use_bf16`` (bfloat16) is set and ``force_fp32`` is
not; on the CPU it always runs in fp32.

Every wrapper can be built on the meta device (``with torch.device("meta"): ...``), which gives parameter
names and shapes without allocating them; the few numbers computed in a constructor (VP's sigma range,
iDDPM's ``u``) are computed on the CPU even then.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from full.nets.edm import ARCHITECTURES

Coefficients = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def precond_inputs(x: torch.Tensor, sigma, class_labels: torch.Tensor | None, label_dim: int):
    """x and sigma in fp32 (sigma shaped [B or 1, 1, 1, 1]) and the labels as the U-Net takes them: None for an
    unconditional net, a zero row [1, label_dim] for labels None (EDM's and EDM2's convention)."""
    x = x.to(torch.float32)
    sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, 1, 1, 1)
    if label_dim == 0:
        class_labels = None
    elif class_labels is None:
        class_labels = torch.zeros([1, label_dim], device=x.device)
    else:
        class_labels = class_labels.to(torch.float32).reshape(-1, label_dim)
    return x, sigma, class_labels


class Precond(nn.Module):
    """Shared call D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) (Eq. 7); subclasses give the coefficients.

    Subclasses call `__init__` with the attributes every wrapper shares; it builds the U-Net ``self.model``.
    """

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int, use_fp16: bool, use_bf16: bool,
                 model_type: str, model_kwargs: dict, out_channels: int | None = None):
        super().__init__()
        if model_type not in ARCHITECTURES:
            raise ValueError(f"unknown model_type {model_type!r}; known: {', '.join(ARCHITECTURES)}")
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.use_bf16 = use_bf16
        self.model = ARCHITECTURES[model_type](img_resolution=img_resolution, in_channels=img_channels,
                                               out_channels=out_channels or img_channels, label_dim=label_dim,
                                               **model_kwargs)

    def coefficients(self, sigma: torch.Tensor) -> Coefficients:
        """(c_skip, c_out, c_in, c_noise) as tensors shaped like ``sigma`` (Table 1)."""
        raise NotImplementedError

    def round_sigma(self, sigma):
        """The noise level the network supports nearest to ``sigma`` (identity for continuous schedules)."""
        return torch.as_tensor(sigma)

    def compute_dtype(self, x: torch.Tensor, force_fp32: bool = False) -> torch.dtype:
        """dtype of the U-Net's activations: reduced precision only on CUDA and only when enabled."""
        if force_fp32 or x.device.type != "cuda" or not (self.use_fp16 or self.use_bf16):
            return torch.float32
        return torch.bfloat16 if self.use_bf16 else torch.float16

    def _inputs(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None):
        return precond_inputs(x, sigma, class_labels, self.label_dim)

    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False, *, return_logits: bool = False, **model_kwargs):
        """D(x; sigma) for x [B,C,H,W]; sigma is 0-d (shared) or per sample ([B] or [B,1,1,1]).

        class_labels: [B, label_dim] (one-hot) or None (zeros when label_dim > 0); model_kwargs carries
        ``augment_labels`` [B, augment_dim]. Returns fp32 [B,C,H,W]; with ``return_logits`` the pair
        (D, logits) where logits [B,1,h,w] is SiDA's discriminator map of the same forward (see `logits`).
        """
        x, sigma, class_labels = self._inputs(x, sigma, class_labels)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        dtype = self.compute_dtype(x, force_fp32)
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels,
                         return_logits=return_logits, **model_kwargs)
        F_x, logits = F_x if return_logits else (F_x, None)
        D_x = c_skip * x + c_out * F_x[:, :self.img_channels].to(torch.float32)
        return (D_x, logits.to(torch.float32)) if return_logits else D_x

    def logits(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None, force_fp32: bool = False,
               **model_kwargs) -> torch.Tensor:
        """SiDA's discriminator logit map [B, 1, h, w] (Zhou et al. 2025): the channel mean of the U-Net's last
        encoder block at input c_in x, with the denoiser's noise, label and augment embeddings; no decoder."""
        x, sigma, class_labels = self._inputs(x, sigma, class_labels)
        _, _, c_in, c_noise = self.coefficients(sigma)
        dtype = self.compute_dtype(x, force_fp32)
        return self.model.encoder_logits((c_in * x).to(dtype), c_noise.flatten(), class_labels,
                                         **model_kwargs).to(torch.float32)


class VPPrecond(Precond):
    """Variance-preserving (DDPM++) preconditioning, Table 1 "VP":
    c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1), c_noise = (M - 1) sigma^-1(sigma),
    with sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1).
    """

    def __init__(self,
        img_resolution,                         # Image resolution.
        img_channels,                           # Colour channels.
        label_dim       = 0,                    # Number of class labels, 0 = unconditional.
        use_fp16        = False,                # Run the U-Net in float16 on CUDA?
        beta_d          = 19.9,                 # Extent of the noise schedule.
        beta_min        = 0.1,                  # Initial slope of the noise schedule.
        M               = 1000,                 # Number of DDPM timesteps.
        epsilon_t       = 1e-5,                 # Smallest t used in training.
        model_type      = "SongUNet",           # Key of `ARCHITECTURES`.
        *,
        use_bf16        = False,                # Run the U-Net in bfloat16 on CUDA (takes precedence)?
        **model_kwargs,                         # Keyword arguments of the U-Net.
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, use_bf16, model_type, model_kwargs)
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        with torch.device("cpu"):  # plain numbers, also while the network is built on the meta device
            self.sigma_min = float(self.sigma(epsilon_t))
            self.sigma_max = float(self.sigma(1))

    def sigma(self, t):
        """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t ** 2) + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma):
        """t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d."""
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def coefficients(self, sigma: torch.Tensor) -> Coefficients:
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        return torch.ones_like(sigma), -sigma, c_in, (self.M - 1) * self.sigma_inv(sigma)


class VEPrecond(Precond):
    """Variance-exploding (NCSN++) preconditioning, Table 1 "VE":
    c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2).
    """

    def __init__(self,
        img_resolution,                         # Image resolution.
        img_channels,                           # Colour channels.
        label_dim       = 0,                    # Number of class labels, 0 = unconditional.
        use_fp16        = False,                # Run the U-Net in float16 on CUDA?
        sigma_min       = 0.02,                 # Smallest supported noise level.
        sigma_max       = 100,                  # Largest supported noise level.
        model_type      = "SongUNet",           # Key of `ARCHITECTURES`.
        *,
        use_bf16        = False,                # Run the U-Net in bfloat16 on CUDA (takes precedence)?
        **model_kwargs,                         # Keyword arguments of the U-Net.
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, use_bf16, model_type, model_kwargs)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def coefficients(self, sigma: torch.Tensor) -> Coefficients:
        one = torch.ones_like(sigma)
        return one, sigma, one, (0.5 * sigma).log()


class iDDPMPrecond(Precond):
    """Improved-DDPM (ADM) preconditioning, Table 1 "iDDPM":
    c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1), c_noise = M - 1 - argmin_j |u_j - sigma|,
    with u_M = 0, u_{j-1} = sqrt((u_j^2 + 1) / max(abar(j-1)/abar(j), C_1) - 1),
    abar(j) = sin^2(pi j / (2 M (C_2 + 1))).
    The inner U-Net predicts 2 x img_channels (mean and variance); only the first img_channels are used.
    """

    def __init__(self,
        img_resolution,                         # Image resolution.
        img_channels,                           # Colour channels.
        label_dim       = 0,                    # Number of class labels, 0 = unconditional.
        use_fp16        = False,                # Run the U-Net in float16 on CUDA?
        C_1             = 0.001,                # Timestep adjustment at low noise levels.
        C_2             = 0.008,                # Timestep adjustment at high noise levels.
        M               = 1000,                 # Number of DDPM timesteps.
        model_type      = "DhariwalUNet",       # Key of `ARCHITECTURES`.
        *,
        use_bf16        = False,                # Run the U-Net in bfloat16 on CUDA (takes precedence)?
        **model_kwargs,                         # Keyword arguments of the U-Net.
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, use_bf16, model_type, model_kwargs,
                         out_channels=img_channels * 2)  # mean and variance
        self.C_1 = C_1
        self.C_2 = C_2
        self.M = M
        with torch.device("cpu"):  # computed, also while the network is built on the meta device
            abar = self.alpha_bar(torch.arange(M + 1))
            ratio = (abar[:-1] / abar[1:]).clip(min=C_1)  # ratio[j-1] = abar(j-1) / abar(j)
            u = torch.zeros(M + 1)
            for j in range(M, 0, -1):
                u[j - 1] = ((u[j] ** 2 + 1) / ratio[j - 1] - 1).sqrt()
        self.register_buffer("u", u)
        self.sigma_min = float(u[M - 1])
        self.sigma_max = float(u[0])

    def alpha_bar(self, j):
        """abar(j) = sin^2(pi j / (2 M (C_2 + 1))) (Nichol & Dhariwal 2021 cosine schedule)."""
        j = torch.as_tensor(j)
        return (0.5 * math.pi * j / self.M / (self.C_2 + 1)).sin() ** 2

    def round_sigma(self, sigma, return_index: bool = False):
        """Snap sigma to the nearest u_j (or return j), keeping sigma's shape and device."""
        sigma = torch.as_tensor(sigma)
        flat = sigma.to(self.u.device, torch.float32).reshape(-1, 1)
        index = (flat - self.u.reshape(1, -1)).abs().argmin(dim=1)
        result = index if return_index else self.u[index].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)

    def coefficients(self, sigma: torch.Tensor) -> Coefficients:
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = self.M - 1 - self.round_sigma(sigma, return_index=True).to(torch.float32)
        return torch.ones_like(sigma), -sigma, c_in, c_noise


class EDMPrecond(Precond):
    """EDM preconditioning, Table 1 "ours":
    c_skip = sigma_d^2 / (sigma^2 + sigma_d^2), c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2),
    c_in = 1 / sqrt(sigma^2 + sigma_d^2), c_noise = ln(sigma) / 4.
    """

    def __init__(self,
        img_resolution,                         # Image resolution.
        img_channels,                           # Colour channels.
        label_dim       = 0,                    # Number of class labels, 0 = unconditional.
        use_fp16        = False,                # Run the U-Net in float16 on CUDA?
        sigma_min       = 0,                    # Smallest supported noise level.
        sigma_max       = float("inf"),         # Largest supported noise level.
        sigma_data      = 0.5,                  # Standard deviation of the training data.
        model_type      = "DhariwalUNet",       # Key of `ARCHITECTURES`.
        *,
        use_bf16        = False,                # Run the U-Net in bfloat16 on CUDA (takes precedence)?
        **model_kwargs,                         # Keyword arguments of the U-Net.
    ):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, use_bf16, model_type, model_kwargs)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data

    def coefficients(self, sigma: torch.Tensor) -> Coefficients:
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma ** 2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4


PRECONDITIONERS: dict[str, type[Precond]] = {
    "EDMPrecond": EDMPrecond, "VPPrecond": VPPrecond, "VEPrecond": VEPrecond, "iDDPMPrecond": iDDPMPrecond,
}
