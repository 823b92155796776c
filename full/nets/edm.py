"""EDM's denoiser networks, weight-compatible with NVlabs/edm ``training/networks.py``.

Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative Models", Appendix F:
`SongUNet` re-implements DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through
SDEs") and `DhariwalUNet` re-implements ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs").
Parameter and buffer names, shapes and registration order equal EDM's, so an official state_dict loads
by name (``enc.32x32_conv.weight``, ...). Weights are drawn by EDM's rules and in EDM's order, so a
network built under the same seed starts from the same weights.

Mixed precision follows EDM: parameters stay fp32 and every layer casts them to the input's dtype;
the embedding vector stays fp32 and attention logits/softmax are computed in fp32.

The preconditioning wrappers live in `full.nets.precond`; they pick an architecture from `ARCHITECTURES`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT_HALF = math.sqrt(0.5)


def weight_init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """A fresh weight tensor: Xavier (Glorot & Bengio 2010) or Kaiming (He et al. 2015), uniform or normal.

    The uniform modes draw U[-a, a]; all four have variance 2/(fan_in + fan_out) (Xavier) or 1/fan_in (Kaiming).
    """
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode!r}")


def _param(shape: Sequence[int], mode: str, fan_in: int, fan_out: int, gain: float) -> nn.Parameter:
    # The draw happens even when gain == 0, so the random stream stays aligned with EDM's.
    return nn.Parameter(weight_init(shape, mode, fan_in, fan_out) * gain)


class Linear(nn.Module):
    """y = x W^T + b with W of shape [out, in]; weights cast to the input's dtype."""

    def __init__(self,
        in_features: int,                       # Input width.
        out_features: int,                      # Output width.
        bias: bool = True,                      # Add a learned bias?
        init_mode: str = "kaiming_normal",      # `weight_init` mode.
        init_weight: float = 1,                 # Gain of the initial weight.
        init_bias: float = 0,                   # Gain of the initial bias (0 = zeros).
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = _param([out_features, in_features], gain=init_weight, **fans)
        self.register_parameter("bias", _param([out_features], gain=init_bias, **fans) if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight.to(x.dtype).t()
        return x if self.bias is None else x.add_(self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """k x k convolution (``kernel=0``: none) with optional 2x FIR up- or downsampling before it.

    The separable filter f is stored as the buffer ``resample_filter`` = f f^T / (sum f)^2 (only when
    ``up`` or ``down``). Down: depthwise filter with stride 2, then the conv. Up: depthwise transposed
    filter (gain 4) with stride 2, then the conv. f = [1,1] gives 2x2 average pooling / nearest upsampling.
    ``fused_resample`` (down only, NCSN++'s residual encoder) applies the conv first, padded so that the
    stride-2 filter that follows needs no padding.
    """

    def __init__(self,
        in_channels: int,                       # Input channels.
        out_channels: int,                      # Output channels.
        kernel: int,                            # Kernel size k; 0 = resampling only (no weight, no bias).
        bias: bool = True,                      # Add a learned bias (when kernel > 0)?
        up: bool = False,                       # Upsample 2x before the conv?
        down: bool = False,                     # Downsample 2x before the conv?
        resample_filter: Sequence[float] = (1, 1),  # 1-D FIR filter f for up/downsampling.
        fused_resample: bool = False,           # Downsampling: conv first, then the stride-2 filter.
        init_mode: str = "kaiming_normal",      # `weight_init` mode.
        init_weight: float = 1,                 # Gain of the initial weight.
        init_bias: float = 0,                   # Gain of the initial bias (0 = zeros).
    ):
        if up and down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        if fused_resample and up and kernel:
            raise ValueError("fused resampling is only supported for downsampling")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        weight = _param([out_channels, in_channels, kernel, kernel], gain=init_weight, **fans) if kernel else None
        self.register_parameter("weight", weight)
        self.register_parameter("bias", _param([out_channels], gain=init_bias, **fans) if kernel and bias else None)
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = (torch.outer(f, f) / f.sum().square()).reshape(1, 1, len(f), len(f))
        self.register_buffer("resample_filter", f if up or down else None)

    def _depthwise(self, x: torch.Tensor, f: torch.Tensor, transpose: bool, padding: int) -> torch.Tensor:
        channels = x.shape[1]
        if transpose:
            return F.conv_transpose2d(x, (f * 4).expand(channels, 1, -1, -1), groups=channels, stride=2,
                                      padding=padding)
        return F.conv2d(x, f.expand(channels, 1, -1, -1), groups=channels, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        if self.fused_resample and self.down and w is not None:
            x = self._depthwise(F.conv2d(x, w, padding=w_pad + f_pad), f, transpose=False, padding=0)
        else:
            if f is not None:
                x = self._depthwise(x, f, transpose=self.up, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x if self.bias is None else x.add_(self.bias.to(x.dtype).reshape(1, -1, 1, 1))


class GroupNorm(nn.Module):
    """Group normalisation (Wu & He 2018) with min(num_groups, C // min_channels_per_group) groups."""

    def __init__(self,
        num_channels: int,                      # Channels C.
        num_groups: int = 32,                   # Upper bound on the number of groups.
        min_channels_per_group: int = 4,        # Lower bound on channels per group.
        eps: float = 1e-5,                      # Variance epsilon.
    ):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dot-product attention a = v softmax_k(q^T k / sqrt(C)) on [N, C, L] tensors (N = batch x heads).

    Logits and softmax are computed in fp32 whatever the input dtype; the result has v's dtype.
    """
    logits = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(k.shape[1]))
    return torch.einsum("nqk,nck->ncq", logits.softmax(dim=2).to(v.dtype), v)


class UNetBlock(nn.Module):
    """Residual block with optional up/downsampling and self-attention, shared by DDPM++, NCSN++ and ADM.

    h = conv0(silu(norm0(x))); then with p = affine(emb):
      adaptive_scale (ADM): h = silu(shift + norm1(h) (1 + scale)), (scale, shift) = p;
      otherwise:            h = silu(norm1(h + p)).
    h = (conv1(dropout(h)) + skip(x)) * skip_scale, skip = identity when shapes allow.
    Attention: q, k, v = qkv(norm2(h)), interleaved per channel as [..., C/heads, 3, HW];
    h = (proj(dot_product_attention(q, k, v)) + h) * skip_scale.
    """

    def __init__(self,
        in_channels: int,                       # Input channels.
        out_channels: int,                      # Output channels.
        emb_channels: int,                      # Width of the conditioning embedding vector.
        up: bool = False,                       # Upsample 2x in conv0 and skip?
        down: bool = False,                     # Downsample 2x in conv0 and skip?
        attention: bool = False,                # Append a self-attention layer?
        num_heads: int | None = None,           # Attention heads; None = out_channels // channels_per_head.
        channels_per_head: int = 64,            # Channels per head when num_heads is None.
        dropout: float = 0,                     # Dropout probability before conv1.
        skip_scale: float = 1,                  # Scale applied after each residual sum.
        eps: float = 1e-5,                      # GroupNorm epsilon.
        resample_filter: Sequence[float] = (1, 1),  # 1-D FIR filter for up/downsampling.
        resample_proj: bool = False,            # 1x1 conv on a resampling skip even if channels match?
        adaptive_scale: bool = True,            # Embedding gives scale and shift (ADM) instead of a bias?
        init: dict | None = None,               # Init kwargs of conv0, affine, skip (and qkv by default).
        init_zero: dict | None = None,          # Init kwargs of conv1 and proj; None = zero weights.
        init_attn: dict | None = None,          # Init kwargs of qkv; None = same as init.
    ):
        super().__init__()
        init = {} if init is None else init
        init_zero = dict(init_weight=0) if init_zero is None else init_zero
        init_attn = init if init_attn is None else init_attn
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        resample = dict(up=up, down=down, resample_filter=resample_filter)
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, **resample, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)
        self.skip = None
        if in_channels != out_channels or up or down:
            kernel = 1 if resample_proj or in_channels != out_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, **resample, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **init_attn)
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        p = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = p.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = F.silu(self.norm1(h.add_(p)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        h = h.add_(x if self.skip is None else self.skip(x)).mul_(self.skip_scale)
        if self.num_heads:
            b, c, height, width = h.shape
            qkv = self.qkv(self.norm2(h)).reshape(b * self.num_heads, c // self.num_heads, 3, height * width)
            a = dot_product_attention(*qkv.unbind(2)).reshape(b, c, height, width)
            h = self.proj(a).add_(h).mul_(self.skip_scale)
        return h


class PositionalEmbedding(nn.Module):
    """Transformer sinusoidal embedding [cos(x f_i), sin(x f_i)], f_i = max_positions^(-i / (C/2 - endpoint))."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        x = torch.outer(x, ((1 / self.max_positions) ** freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos(2 pi f x), sin(2 pi f x)], f ~ N(0, scale^2) stored as buffer ``freqs``."""

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


def _drop_labels(labels: torch.Tensor, p: float, batch: int) -> torch.Tensor:
    """Zero each sample's label vector with probability p (classifier-free guidance training)."""
    keep = torch.rand([batch, 1], device=labels.device) >= p
    return labels * keep.to(labels.dtype)


class EncoderDecoder(nn.Module):
    """The call shared by EDM's U-Nets, built from their `embed`, `encode` and `decode`.

    forward(x [B,C,H,W], noise_labels [B] or [1], class_labels [B,L] or None, augment_labels [B,A] or None)
    returns F(x) [B, out_channels, H, W]; with ``return_logits`` also SiDA's discriminator logit map
    (Zhou et al. 2025): the channel mean of the last encoder block's output, [B, 1, h, w], from the same forward.
    `encoder_logits` computes that map alone, without the decoder.
    """

    def encoder_logits(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                       augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """SiDA's discriminator logit map [B, 1, h, w]: the channel mean of the last encoder block (no decoder)."""
        h, _ = self.encode(x, self.embed(noise_labels, class_labels, augment_labels, x.shape[0]), keep_skips=False)
        return h.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                augment_labels: torch.Tensor | None = None, return_logits: bool = False):
        """F(x) [B, out_channels, H, W]; with ``return_logits`` also SiDA's logit map from the same forward."""
        emb = self.embed(noise_labels, class_labels, augment_labels, x.shape[0])
        h, skips = self.encode(x, emb)
        out = self.decode(h, skips, emb)
        return (out, h.mean(dim=1, keepdim=True)) if return_logits else out


class SongUNet(EncoderDecoder):
    """DDPM++ / NCSN++ U-Net (Song et al. 2021) as re-implemented by EDM.

    forward(x [B,C,H,W], noise_labels [B] or [1], class_labels [B,L] or None, augment_labels [B,A] or None)
    returns F(x) of shape [B, out_channels, H, W]. DDPM++: positional embedding, standard encoder, filter
    [1,1]; NCSN++: Fourier embedding with channel_mult_noise 2, residual encoder, filter [1,3,3,1].
    """

    def __init__(self,
        img_resolution: int,                    # Image resolution at input and output.
        in_channels: int,                       # Colour channels at input.
        out_channels: int,                      # Colour channels at output.
        label_dim: int = 0,                     # Number of class labels, 0 = unconditional.
        augment_dim: int = 0,                   # Augmentation label size, 0 = no augmentation input.

        model_channels: int = 128,              # Base channel count.
        channel_mult: Sequence[int] = [1, 2, 2, 2],  # Channel multiplier per resolution level.
        channel_mult_emb: int = 4,              # Embedding width = model_channels * this.
        num_blocks: int = 4,                    # Residual blocks per resolution level.
        attn_resolutions: Sequence[int] = [16], # Resolutions with self-attention.
        dropout: float = 0.10,                  # Dropout probability inside the blocks.
        label_dropout: float = 0,               # Probability of dropping class labels in training (CFG).

        embedding_type: str = "positional",     # Noise embedding: 'positional' (DDPM++) or 'fourier' (NCSN++).
        channel_mult_noise: int = 1,            # Noise embedding width = model_channels * this (1 or 2).
        encoder_type: str = "standard",         # 'standard' (DDPM++), 'skip' or 'residual' (NCSN++).
        decoder_type: str = "standard",         # 'standard' or 'skip'.
        resample_filter: Sequence[int] = [1, 1],  # FIR filter: [1,1] (DDPM++) or [1,3,3,1] (NCSN++).
    ):
        if embedding_type not in ("fourier", "positional"):
            raise ValueError(f"unknown embedding_type {embedding_type!r}")
        if encoder_type not in ("standard", "skip", "residual"):
            raise ValueError(f"unknown encoder_type {encoder_type!r}")
        if decoder_type not in ("standard", "skip"):
            raise ValueError(f"unknown decoder_type {decoder_type!r}")
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=SQRT_HALF, eps=1e-6,
                     resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                     init=init, init_zero=init_zero, init_attn=init_attn)

        # Mapping network.
        self.map_noise = (PositionalEmbedding(noise_channels, endpoint=True) if embedding_type == "positional"
                          else FourierEmbedding(noise_channels))
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder; `skips` records the channel count of every output the decoder concatenates.
        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        skips = []
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, model_channels, kernel=3, **init)
                cout = model_channels
                skips.append(cout)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
                skips.append(cout)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, kernel=0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, kernel=1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, kernel=3, down=True,
                                                                   resample_filter=resample_filter,
                                                                   fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions,
                                                                **block)
                skips.append(cout)

        # Decoder: attention only on the last block of a level.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, kernel=0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def embed(self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
              augment_labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Mapping: [sin, cos] noise features (+ labels * sqrt(L)) (+ augment labels) -> 2-layer MLP."""
        emb = torch.cat(self.map_noise(noise_labels).chunk(2, dim=1)[::-1], dim=1)
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                labels = _drop_labels(labels, self.label_dropout, batch)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def encode(self, x: torch.Tensor, emb: torch.Tensor, keep_skips: bool = True
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder: its last block's output and the skips the decoder concatenates."""
        skips, aux = [], x
        for name, block in self.enc.items():
            if name.endswith("_aux_down"):
                aux = block(aux)
            elif name.endswith("_aux_skip"):
                x = x + block(aux)
                if keep_skips:
                    skips[-1] = x
            elif name.endswith("_aux_residual"):
                x = aux = (x + block(aux)) / math.sqrt(2)
                if keep_skips:
                    skips[-1] = x
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                if keep_skips:
                    skips.append(x)
        return x, skips

    def decode(self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """The decoder: the output is the sum of the (upsampled) aux_conv outputs."""
        aux = out = None
        for name, block in self.dec.items():
            if name.endswith("_aux_up"):
                out = block(out)
            elif name.endswith("_aux_norm"):
                aux = block(x)
            elif name.endswith("_aux_conv"):
                aux = block(F.silu(aux))
                out = aux if out is None else aux + out
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return out


class DhariwalUNet(EncoderDecoder):
    """ADM U-Net (Dhariwal & Nichol 2021) as re-implemented by EDM.

    Same call as `SongUNet`. Blocks use adaptive scale/shift, 64 channels per attention head (no
    attention below 64 channels), average-pool / nearest-upsample skips, and attention in every
    block of a level in ``attn_resolutions``.
    """

    def __init__(self,
        img_resolution: int,                    # Image resolution at input and output.
        in_channels: int,                       # Colour channels at input.
        out_channels: int,                      # Colour channels at output.
        label_dim: int = 0,                     # Number of class labels, 0 = unconditional.
        augment_dim: int = 0,                   # Augmentation label size, 0 = no augmentation input.

        model_channels: int = 192,              # Base channel count.
        channel_mult: Sequence[int] = [1, 2, 3, 4],  # Channel multiplier per resolution level.
        channel_mult_emb: int = 4,              # Embedding width = model_channels * this.
        num_blocks: int = 3,                    # Residual blocks per resolution level.
        attn_resolutions: Sequence[int] = [32, 16, 8],  # Resolutions with self-attention.
        dropout: float = 0.10,                  # Dropout probability inside the blocks.
        label_dropout: float = 0,               # Probability of dropping class labels in training (CFG).
    ):
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero)

        # Mapping network.
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                 init_weight=math.sqrt(label_dim)) if label_dim else None)

        # Encoder; every output is a skip.
        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, model_channels * mult, kernel=3, **init)
                cout = model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions,
                                                                **block)
        skips = [b.out_channels for b in self.enc.values()]

        # Decoder.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions,
                                                                **block)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def embed(self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
              augment_labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Mapping: [cos, sin] noise features (+ augment) -> MLP, + labels after the last linear layer."""
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                labels = _drop_labels(labels, self.label_dropout, batch)
            emb = emb + self.map_label(labels)
        return F.silu(emb)

    def encode(self, x: torch.Tensor, emb: torch.Tensor, keep_skips: bool = True
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder: its last block's output and every block's output as a skip."""
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            if keep_skips:
                skips.append(x)
        return x, skips

    def decode(self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


ARCHITECTURES: dict[str, type[nn.Module]] = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
