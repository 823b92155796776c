"""EDM2's magnitude-preserving U-Net and its preconditioner, weight-compatible with NVlabs/edm2.

Karras, Aittala, Lehtinen, Hellsten, Aila & Laine, "Analyzing and Improving the Training Dynamics of
Diffusion Models", CVPR 2024 (EDM2). Section 2 and the appendix derive the magnitude-preserving (MP) layers:
every activation, weight and sum is scaled so that unit-variance inputs give unit-variance outputs, the
weights are kept at unit norm (forced weight normalisation), and the network has no biases.

Compatibility: parameter and buffer names, shapes, registration order and constructor defaults equal
those of EDM2's ``training/networks_edm2.py``, so the state_dict of a released ``Precond`` (the ``ema``
entry of an ``edm2-img*.pkl``) loads into `EDM2Precond` by name with ``strict=True``
(``unet.enc.64x64_conv.weight``, ``unet.dec.8x8_in0.attn_qkv.weight``, ``logvar_linear.weight``, ...).
Random draws at construction happen in EDM2's order, so the same seed gives the same initial weights.

Additions for SiD / SiDA (none of them adds a state-dict key):
- the call takes the keyword-only ``return_logits``: the discriminator logit map of adversarial SiD, the
  channel mean of the last encoder block's output ([N, 1, H_min, W_min]); `EDM2Precond.logits` computes it
  without running the decoder;
- forced weight normalisation can be switched off per network (`EDM2Precond.set_force_normalization`), so
  that a network evaluated several times in one autograd graph is not modified in place between the calls.

Precision: x, sigma, D and logvar are fp32; the U-Net runs in float16 only on CUDA with ``use_fp16`` and
without ``force_fp32``; on the CPU everything is fp32. Weights are normalised in fp32 whatever their storage
dtype (the released checkpoints store float16).

`EDM2_CONFIGS` lists the constructor arguments of the released models (``train_edm2.py`` presets).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from full.nets.precond import precond_inputs

# ---------------------------------------------------------------------------------------------------------
# Magnitude-preserving primitives (EDM2 Section 2 and appendix).

def normalize(x: torch.Tensor, dim: int | list[int] | tuple[int, ...] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Scale x to unit RMS over ``dim`` (default: every dimension but the first), i.e. per output channel.

    x / (eps + ||x|| / sqrt(n)) with n the number of elements each norm runs over; the norm is taken in
    fp32. Used for weights (Eq. 66), pixel norm of activations and the cosine attention of Figure 21.
    """
    if dim is None:
        dim = tuple(range(1, x.ndim))
    elif isinstance(dim, int):
        dim = (dim,)
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    count = x.numel() // max(norm.numel(), 1)
    norm = eps + norm / math.sqrt(count)
    return x / norm.to(x.dtype)


def resample(x: torch.Tensor, f: list[float] | tuple[float, ...] = (1, 1), mode: str = "keep") -> torch.Tensor:
    """2x resampling with the separable filter f f^T / (sum f)^2 applied per channel (Figure 21).

    ``mode``: 'keep' returns x; 'down' filters with stride 2 (f = [1,1]: 2x2 average pooling); 'up' applies
    the transposed filter with gain 4 and stride 2 (f = [1,1]: nearest-neighbour upsampling).
    """
    if mode == "keep":
        return x
    if mode not in ("down", "up"):
        raise ValueError(f"unknown resample mode {mode!r}")
    taps = torch.as_tensor(list(f), dtype=torch.float32)
    if taps.ndim != 1 or len(taps) % 2 != 0:
        raise ValueError("resample filter must be 1-D with an even number of taps")
    taps = taps / taps.sum()
    kernel = torch.outer(taps, taps).to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    padding = (len(taps) - 1) // 2
    if mode == "down":
        kernel = kernel.expand(channels, 1, -1, -1)
        return F.conv2d(x, kernel, groups=channels, stride=2, padding=padding)
    kernel = (4 * kernel).expand(channels, 1, -1, -1)
    return F.conv_transpose2d(x, kernel, groups=channels, stride=2, padding=padding)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU divided by 0.596, its output RMS for standard normal input (Eq. 81)."""
    return F.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """((1 - t) a + t b) / sqrt((1 - t)^2 + t^2): a weighted sum of unit-variance terms with unit variance (Eq. 88)."""
    return torch.lerp(a, b, t) / math.hypot(1 - t, t)


def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    """Concatenation along ``dim`` that keeps unit magnitude while giving b the weight t (Eq. 103).

    With N_a, N_b the sizes of the parts and C = sqrt((N_a + N_b) / ((1 - t)^2 + t^2)),
    the result is [C (1 - t) / sqrt(N_a) a, C t / sqrt(N_b) b].
    """
    size_a, size_b = a.shape[dim], b.shape[dim]
    scale = math.sqrt((size_a + size_b) / ((1 - t) ** 2 + t ** 2))
    return torch.cat([a * (scale * (1 - t) / math.sqrt(size_a)), b * (scale * t / math.sqrt(size_b))], dim=dim)


# ---------------------------------------------------------------------------------------------------------
# Layers.

class MPFourier(nn.Module):
    """Magnitude-preserving Fourier features of a scalar (Eq. 75): sqrt(2) cos(2 pi (x f + p)).

    The buffers hold 2 pi f with f ~ N(0, bandwidth^2) and 2 pi p with p ~ U[0, 1); they are fixed, not learned.
    """

    def __init__(self,
        num_channels: int,                      # Number of features.
        bandwidth: float = 1,                   # Standard deviation of the frequencies.
    ):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N] -> features [N, num_channels], computed in fp32 and returned in x's dtype."""
        angle = torch.outer(x.to(torch.float32), self.freqs.to(torch.float32)) + self.phases.to(torch.float32)
        return (math.sqrt(2) * angle.cos()).to(x.dtype)


class MPConv(nn.Module):
    """Magnitude-preserving convolution (``kernel=[k, k]``) or fully connected layer (``kernel=[]``), Eq. 47.

    The effective weight is normalize(w) * gain / sqrt(fan_in), fan_in = in_channels * prod(kernel)
    (weight normalisation, Eq. 66). With ``force_normalization`` on (EDM2's behaviour) a training-mode call
    first overwrites the stored weight with normalize(w) (forced weight normalisation, Eq. 66, Section 2).
    No bias.
    """

    def __init__(self,
        in_channels: int,                       # Input channels (features).
        out_channels: int,                      # Output channels (features).
        kernel: list[int],                      # Kernel shape: [] = fully connected, [k, k] = k x k conv.
    ):
        super().__init__()
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))
        self.force_normalization = True         # Not persistent; see EDM2Precond.set_force_normalization.

    def effective_weight(self, gain=1) -> torch.Tensor:
        """normalize(w) * gain / sqrt(fan_in) in fp32."""
        w = normalize(self.weight.to(torch.float32))
        fan_in = w[0].numel()
        return w * (gain / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, gain=1) -> torch.Tensor:
        if self.training and self.force_normalization:
            with torch.no_grad():
                self.weight.copy_(normalize(self.weight.to(torch.float32)))
        w = self.effective_weight(gain).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        if w.ndim != 4:
            raise ValueError(f"MPConv supports 2-D and 4-D weights, got {w.ndim}-D")
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


class Block(nn.Module):
    """U-Net block of Figure 21 (encoder 'enc' or decoder 'dec'), with optional cosine self-attention.

    Main branch: resample; the encoder applies the 1x1 ``conv_skip`` (if the width changes) and pixel norm.
    Residual branch: MPConv 3x3 of mp_silu, modulated by 1 + emb_linear(emb) (gain ``emb_gain``, starts at 0),
    mp_silu, dropout, MPConv 3x3. The decoder applies ``conv_skip`` to the main branch here instead. The two
    branches meet in mp_sum(t=res_balance); attention is added by mp_sum(t=attn_balance); finally clipping.
    """

    def __init__(self,
        in_channels: int,                       # Input channels.
        out_channels: int,                      # Output channels.
        emb_channels: int,                      # Width of the embedding vector.
        flavor: str             = "enc",        # 'enc' (encoder) or 'dec' (decoder).
        resample_mode: str      = "keep",       # 'keep', 'up' or 'down'.
        resample_filter         = [1, 1],       # 1-D resampling filter.
        attention: bool         = False,        # Add self-attention?
        channels_per_head: int  = 64,           # Channels per attention head.
        dropout: float          = 0,            # Dropout probability in the residual branch.
        res_balance: float      = 0.3,          # Weight of the residual branch in mp_sum, 0 = main branch only.
        attn_balance: float     = 0.3,          # Weight of the attention branch in mp_sum, 0 = main branch only.
        clip_act: float | None  = 256,          # Clip the output to [-clip_act, clip_act]; None = no clipping.
    ):
        if flavor not in ("enc", "dec"):
            raise ValueError(f"unknown block flavor {flavor!r}")
        super().__init__()
        self.out_channels = out_channels
        self.flavor = flavor
        self.resample_filter = resample_filter
        self.resample_mode = resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = dropout
        self.res_balance = res_balance
        self.attn_balance = attn_balance
        self.clip_act = clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        width_res0 = out_channels if flavor == "enc" else in_channels
        self.conv_res0 = MPConv(width_res0, out_channels, kernel=[3, 3])
        self.emb_linear = MPConv(emb_channels, out_channels, kernel=[])
        self.conv_res1 = MPConv(out_channels, out_channels, kernel=[3, 3])
        self.conv_skip = MPConv(in_channels, out_channels, kernel=[1, 1]) if in_channels != out_channels else None
        with_attention = self.num_heads > 0
        self.attn_qkv = MPConv(out_channels, 3 * out_channels, kernel=[1, 1]) if with_attention else None
        self.attn_proj = MPConv(out_channels, out_channels, kernel=[1, 1]) if with_attention else None

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        # qkv channels are laid out as [head, channel, (q, k, v)]; q, k, v are pixel-normalised (cosine attention).
        n, c, h, w = x.shape
        qkv = self.attn_qkv(x).reshape(n, self.num_heads, c // self.num_heads, 3, h * w)
        q, k, v = normalize(qkv, dim=2).unbind(dim=3)
        logits = q.transpose(2, 3) @ (k / math.sqrt(q.shape[2]))  # [n, heads, query, key]
        out = v @ logits.softmax(dim=3).transpose(2, 3)           # [n, heads, channel, query]
        return self.attn_proj(out.reshape(n, c, h, w))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = resample(x, f=self.resample_filter, mode=self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)

        y = self.conv_res0(mp_silu(x))
        scale = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * scale[:, :, None, None].to(y.dtype))
        if self.training and self.dropout != 0:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)

        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)

        if self.num_heads > 0:
            x = mp_sum(x, self._attention(x), t=self.attn_balance)
        if self.clip_act is not None:
            x = x.clamp(-self.clip_act, self.clip_act)
        return x


class UNet(nn.Module):
    """EDM2's U-Net (Figure 21, config G of Table 1): MP layers, no biases, no group norm.

    Embedding: MPFourier of the noise label, MPConv to ``cemb``; the one-hot label (times sqrt(label_dim))
    through MPConv, mixed in by mp_sum(t=label_balance); mp_silu. Encoder: a 3x3 MPConv on the input plus a
    constant-one channel, then per resolution a downsampling block (except the first) and ``num_blocks``
    blocks. Decoder: two blocks at the lowest resolution (the first with attention), then per resolution an
    upsampling block (except the lowest) and ``num_blocks + 1`` blocks, each fed mp_cat(x, skip). Output:
    3x3 MPConv with the learned gain ``out_gain`` (starts at 0).
    """

    def __init__(self,
        img_resolution: int,                    # Input/output resolution.
        img_channels: int,                      # Input/output channels.
        label_dim: int,                         # Number of classes, 0 = unconditional.
        model_channels: int     = 192,          # Base channel count.
        channel_mult            = [1, 2, 3, 4], # Channel multiplier of each resolution.
        channel_mult_noise      = None,         # Noise-feature multiplier; None = channel_mult[0].
        channel_mult_emb        = None,         # Embedding multiplier; None = max(channel_mult).
        num_blocks: int         = 3,            # Encoder blocks per resolution (decoder: one more).
        attn_resolutions        = [16, 8],      # Resolutions whose blocks use self-attention.
        label_balance: float    = 0.5,          # Weight of the class embedding in mp_sum, 0 = noise only.
        concat_balance: float   = 0.5,          # Weight of the skip connection in mp_cat, 0 = main path only.
        **block_kwargs,                         # Keyword arguments of every Block.
    ):
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise is not None else widths[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb is not None else max(widths)
        self.label_balance = label_balance
        self.concat_balance = concat_balance
        self.out_gain = nn.Parameter(torch.zeros([]))

        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, kernel=[])
        self.emb_label = MPConv(label_dim, cemb, kernel=[]) if label_dim != 0 else None

        self.enc = nn.ModuleDict()
        width = img_channels + 1
        for level, channels in enumerate(widths):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(width, channels, kernel=[3, 3])
                width = channels
            else:
                self.enc[f"{res}x{res}_down"] = Block(width, width, cemb, flavor="enc", resample_mode="down",
                                                      **block_kwargs)
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = Block(width, channels, cemb, flavor="enc",
                                                            attention=res in attn_resolutions, **block_kwargs)
                width = channels

        self.dec = nn.ModuleDict()
        skip_widths = [block.out_channels for block in self.enc.values()]
        lowest = len(widths) - 1
        for level in reversed(range(len(widths))):
            channels = widths[level]
            res = img_resolution >> level
            if level == lowest:
                self.dec[f"{res}x{res}_in0"] = Block(width, width, cemb, flavor="dec", attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = Block(width, width, cemb, flavor="dec", **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = Block(width, width, cemb, flavor="dec", resample_mode="up",
                                                    **block_kwargs)
            for idx in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = Block(width + skip_widths.pop(), channels, cemb, flavor="dec",
                                                            attention=res in attn_resolutions, **block_kwargs)
                width = channels
        self.out_conv = MPConv(width, img_channels, kernel=[3, 3])

    def embed(self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        """Embedding vector [N, cemb] (or [1, cemb]) from noise labels [N] and one-hot labels [N or 1, label_dim]."""
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            label_emb = self.emb_label(class_labels * math.sqrt(class_labels.shape[1]))
            emb = mp_sum(emb, label_emb, t=self.label_balance)
        return mp_silu(emb)

    def encode(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder; returns the last block's output and the list of every block's output (the skips)."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb)
            skips.append(x)
        return x, skips

    def decode(self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Run the decoder and the output layer; consumes ``skips`` from the end."""
        for name, block in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)

    @staticmethod
    def logit_map(h: torch.Tensor) -> torch.Tensor:
        """SiDA's discriminator logits: channel mean of the last encoder block's output, fp32 [N, 1, H, W]."""
        return h.to(torch.float32).mean(dim=1, keepdim=True)

    def encoder_logits(self, x: torch.Tensor, noise_labels: torch.Tensor,
                       class_labels: torch.Tensor | None) -> torch.Tensor:
        """The logit map alone; the decoder is skipped."""
        h, _ = self.encode(x, self.embed(noise_labels, class_labels))
        return self.logit_map(h)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                return_logits: bool = False):
        """F(x) [N, img_channels, H, W] in x's dtype; with ``return_logits`` the pair (F, logit map)."""
        emb = self.embed(noise_labels, class_labels)
        h, skips = self.encode(x, emb)
        out = self.decode(h, skips, emb)
        return (out, self.logit_map(h)) if return_logits else out


# ---------------------------------------------------------------------------------------------------------
# Preconditioning (EDM's Table 1, kept by EDM2) and the uncertainty head u(sigma) (EDM2 Eq. 21).

class EDM2Precond(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) around the EDM2 U-Net, plus the logvar head (Eq. 21).

    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2),
    c_noise = ln(sigma) / 4, with sd = sigma_data (Karras et al. 2022, Eq. 7 and Table 1). The head
    logvar(sigma) = MPConv(MPFourier(c_noise)) is the learned uncertainty u(sigma) of EDM2's loss (Eq. 21).
    The inner U-Net is ``self.unet``; EDM2 names this class ``Precond``.
    """

    def __init__(self,
        img_resolution: int,                    # Input/output resolution.
        img_channels: int,                      # Input/output channels.
        label_dim: int,                         # Number of classes, 0 = unconditional.
        use_fp16: bool          = True,         # Run the U-Net in float16 on CUDA?
        sigma_data: float       = 0.5,          # Standard deviation of the training data.
        logvar_channels: int    = 128,          # Fourier features of the logvar head.
        **unet_kwargs,                          # Keyword arguments of the UNet.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.sigma_data = sigma_data
        self.unet = UNet(img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim,
                         **unet_kwargs)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, kernel=[])

    # Forced weight normalisation switch ------------------------------------------------------------------

    def set_force_normalization(self, flag: bool = True) -> EDM2Precond:
        """Switch forced weight normalisation (the in-place renormalisation of training-mode calls) on or off.

        On (the default) reproduces EDM2. Off leaves the stored weights untouched; the effective weights are
        still normalised, so outputs of a single call do not change. Returns self.
        """
        for module in self.modules():
            if isinstance(module, MPConv):
                module.force_normalization = bool(flag)
        return self

    @property
    def force_normalization(self) -> bool:
        """True when every MPConv renormalises its stored weight in training mode."""
        return all(m.force_normalization for m in self.modules() if isinstance(m, MPConv))

    @force_normalization.setter
    def force_normalization(self, flag: bool) -> None:
        self.set_force_normalization(flag)

    @torch.no_grad()
    def normalize_weights_(self) -> None:
        """Overwrite every stored weight with normalize(w) once, as a training-mode call with forced
        normalisation would. A trainer that calls the network several times in one autograd graph (SiDA's
        f_psi step) switches the per-call renormalisation off and calls this once per optimiser step instead."""
        for module in self.modules():
            if isinstance(module, MPConv):
                module.weight.copy_(normalize(module.weight.to(torch.float32)))

    # Calls ----------------------------------------------------------------------------------------------

    def compute_dtype(self, x: torch.Tensor, force_fp32: bool = False) -> torch.dtype:
        """dtype of the U-Net's activations: float16 only on CUDA with ``use_fp16`` and not ``force_fp32``."""
        if self.use_fp16 and not force_fp32 and x.device.type == "cuda":
            return torch.float16
        return torch.float32

    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) shaped like ``sigma``."""
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def _inputs(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None):
        # As EDM's preconditioners, with a shared sigma broadcast over the batch (the logvar head wants [N]).
        x, sigma, class_labels = precond_inputs(x, sigma, class_labels, self.label_dim)
        return x, sigma.expand(x.shape[0], 1, 1, 1) if sigma.shape[0] == 1 else sigma, class_labels

    def logvar(self, sigma: torch.Tensor) -> torch.Tensor:
        """u(sigma) of Eq. 21 as [N, 1, 1, 1] for sigma [N, 1, 1, 1]."""
        c_noise = sigma.flatten().log() / 4
        return self.logvar_linear(self.logvar_fourier(c_noise)).reshape(-1, 1, 1, 1).to(torch.float32)

    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None, force_fp32: bool = False,
                return_logvar: bool = False, *, return_logits: bool = False):
        """D(x; sigma) in fp32, shaped like x [N, C, H, W]; sigma is 0-d, [N] or [N, 1, 1, 1].

        class_labels: one-hot [N, label_dim], or None (a zero row) when label_dim > 0.
        Returns D, (D, logvar), (D, logits) or (D, logvar, logits); logvar is [N, 1, 1, 1], logits is the
        discriminator map [N, 1, H_min, W_min] (see `logits`), both fp32.
        """
        x, sigma, class_labels = self._inputs(x, sigma, class_labels)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        x_in = (c_in * x).to(self.compute_dtype(x, force_fp32))
        result = self.unet(x_in, c_noise.flatten(), class_labels, return_logits=return_logits)
        F_x, logits = result if return_logits else (result, None)
        D_x = c_skip * x + c_out * F_x.to(torch.float32)
        outputs = [D_x]
        if return_logvar:
            outputs.append(self.logvar(sigma))
        if return_logits:
            outputs.append(logits)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def logits(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
               force_fp32: bool = False) -> torch.Tensor:
        """Discriminator logits of adversarial SiD: the channel mean of the last encoder block's output.

        Same input scaling c_in, noise and label embedding as `forward`, no c_skip / c_out; the decoder is not
        run. Returns fp32 [N, 1, img_resolution >> (levels - 1), same].
        """
        x, sigma, class_labels = self._inputs(x, sigma, class_labels)
        _, _, c_in, c_noise = self.coefficients(sigma)
        x_in = (c_in * x).to(self.compute_dtype(x, force_fp32))
        return self.unet.encoder_logits(x_in, c_noise.flatten(), class_labels)


# ---------------------------------------------------------------------------------------------------------
# Released configurations: constructor keyword arguments of EDM2Precond (``train_edm2.py`` presets:
# model_channels and dropout vary, everything else is the default). img512 works on 64x64x4 latents of
# Stable Diffusion's VAE, img64 on 64x64 RGB pixels; both on the 1000 ImageNet classes.

def _config(space: str, model_channels: int, dropout: float, label_dim: int = 1000) -> dict:
    img_channels = 4 if space == "latent" else 3
    return dict(img_resolution=64, img_channels=img_channels, label_dim=label_dim, use_fp16=True,
                model_channels=model_channels, dropout=dropout)


EDM2_CONFIGS: dict[str, dict] = {
    "img512-xs":        _config("latent", 128, 0.0),
    "img512-s":         _config("latent", 192, 0.0),
    "img512-m":         _config("latent", 256, 0.1),
    "img512-l":         _config("latent", 320, 0.1),
    "img512-xl":        _config("latent", 384, 0.1),
    "img512-xxl":       _config("latent", 448, 0.1),
    "img64-s":          _config("pixel", 192, 0.0),
    "img64-m":          _config("pixel", 256, 0.1),
    "img64-l":          _config("pixel", 320, 0.1),
    "img64-xl":         _config("pixel", 384, 0.1),
    # Guiding networks released for classifier-free guidance and autoguidance.
    "img512-xs-uncond": _config("latent", 128, 0.0, label_dim=0),
    "img512-s-uncond":  _config("latent", 192, 0.0, label_dim=0),
    "img64-xs":         _config("pixel", 128, 0.0),
}


def build_edm2(name: str, **overrides) -> EDM2Precond:
    """An `EDM2Precond` built from ``EDM2_CONFIGS[name]``, with keyword overrides."""
    if name not in EDM2_CONFIGS:
        raise KeyError(f"unknown EDM2 config {name!r}; known: {', '.join(EDM2_CONFIGS)}")
    return EDM2Precond(**{**EDM2_CONFIGS[name], **overrides})
