"""Pixel and latent space: EDM2's two encoders as data, and the VAE behind the latent one.

EDM2 (Karras et al., CVPR 2024; NVlabs/edm2 ``training/encoders.py``) separates three representations:
**raw pixels** (uint8 NCHW), **raw latents** (what the dataset stores) and **final latents** (what the network
sees, "model space"). Its two encoders, recorded on a network as ``net.encoder`` (`full.store.edm_pickle`):

- ``StandardRGBEncoder`` (and EDM's networks, which record none): raw latents are the pixels themselves;
  model space is x / 127.5 - 1; decoding is clip(x * 127.5 + 128, 0, 255) as uint8 (EDM's rounding).
- ``StabilityVAEEncoder``: the dataset stores the VAE posterior's mean and std (2C channels, C = 4 for
  ``stabilityai/sd-vae-ft-mse``), encoded once from pixels / 255 (`VAEEncoder.encode_pixels`); model space is
  (mean + std * n) * scale + bias with n ~ N(0, I) drawn afresh every time (`encode_dataset_batch`); decoding
  inverts scale and bias, runs the VAE decoder in batches and returns clamp(y, 0, 1) * 255 truncated to uint8.
  EDM2's defaults: scale = 0.5 / raw_std, bias = -raw_mean * scale, raw_mean [5.81, 3.25, 0.12, -2.15],
  raw_std [4.17, 4.62, 3.71, 3.28] (`stability_vae_record`).

One API for both: ``encoder = encoder_for(net)`` (or of a recorded dict), then
``encoder.encode_dataset_batch(raw, rng)`` (dataset items to model space; the random draw comes from `rng`,
so a seeded run stays reproducible), ``encoder.decode(x)`` (model space to uint8 NCHW pixels), and for the
latent encoder ``encoder.with_vae(location)`` first, which loads the VAE (`load_vae`).

The VAE is ``diffusers.AutoencoderKL``, loaded from a local folder (``save_pretrained``) or a Hugging Face hub id
the user gives (``--vae``), safetensors only (no pickled weights), never at import: diffusers is an optional
dependency (``pip install 'sid[latent]'``) and this module imports without it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from full.errors import ConfigError

# NVlabs/edm2 training/encoders.py, StabilityVAEEncoder's defaults.
EDM2_VAE_NAME = "stabilityai/sd-vae-ft-mse"
EDM2_RAW_MEAN = (5.81, 3.25, 0.12, -2.15)   # assumed mean of the raw latents, per channel
EDM2_RAW_STD = (4.17, 4.62, 3.71, 3.28)     # assumed standard deviation of the raw latents, per channel
EDM2_FINAL_MEAN = 0.0                       # desired mean of the final latents
EDM2_FINAL_STD = 0.5                        # desired standard deviation of the final latents
EDM2_VAE_BATCH = 8                          # images per VAE call
PIXEL_RECORD = {"kind": "StandardRGBEncoder"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
LATENT_INSTALL_HINT = "pip install 'sid[latent]' (or pip install diffusers)"


def stability_vae_record(vae_name: str = EDM2_VAE_NAME, raw_mean=EDM2_RAW_MEAN, raw_std=EDM2_RAW_STD,
                         final_mean: float = EDM2_FINAL_MEAN, final_std: float = EDM2_FINAL_STD,
                         batch_size: int = EDM2_VAE_BATCH) -> dict:
    """The ``net.encoder`` record of a latent network, with scale and bias computed in float32 as EDM2 does:
    scale = final_std / raw_std, bias = final_mean - raw_mean * scale."""
    scale = np.float32(final_std) / np.asarray(raw_std, dtype=np.float32)
    bias = np.float32(final_mean) - np.asarray(raw_mean, dtype=np.float32) * scale
    return {"kind": "StabilityVAEEncoder", "vae_name": vae_name, "scale": [float(v) for v in scale],
            "bias": [float(v) for v in bias], "batch_size": int(batch_size)}


# ------------------------------------------------------------------------------------------------ the VAE


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ConfigError(f"latent-space networks decode and encode with a diffusers VAE, and diffusers is not "
                          f"installed; {LATENT_INSTALL_HINT}") from None
    return diffusers


def load_vae(location: str | os.PathLike, device: str | torch.device = "cpu", *, what: str = "--vae") -> torch.nn.Module:
    """``diffusers.AutoencoderKL`` from a local folder (as written by ``save_pretrained``) or a hub id such as
    ``stabilityai/sd-vae-ft-mse`` (downloaded once into the Hugging Face cache, which is tried first);
    safetensors weights only; float32, eval mode, frozen, on `device`. `what` names the option in errors."""
    location = os.fspath(location)
    local = os.path.isdir(location)
    if not local and (os.path.exists(location) or not _HUB_ID.fullmatch(location)):
        raise ConfigError(f"{what} {location}: no such folder; give a diffusers AutoencoderKL folder (with "
                          f"config.json and diffusion_pytorch_model.safetensors) or a hub id such as {EDM2_VAE_NAME}")
    if local and not os.path.isfile(os.path.join(location, "config.json")):
        raise ConfigError(f"{what} {location} holds no config.json; give a folder written by "
                          f"AutoencoderKL.save_pretrained, or a hub id such as {EDM2_VAE_NAME}")
    diffusers = _diffusers()
    logging = diffusers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # diffusers advertises `accelerate` on every load
    try:
        try:
            vae = diffusers.AutoencoderKL.from_pretrained(location, use_safetensors=True, torch_dtype=torch.float32,
                                                          local_files_only=True)
        except (OSError, ValueError):
            if local:
                raise
            vae = diffusers.AutoencoderKL.from_pretrained(location, use_safetensors=True,  # the user's hub id
                                                          torch_dtype=torch.float32)
    except (OSError, ValueError) as error:  # diffusers' and huggingface_hub's errors for missing or bad files
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{what} {location} is not a loadable AutoencoderKL with safetensors weights "
                          f"({first[:200]})") from None
    finally:
        logging.set_verbosity(verbosity)
    return vae.to(device).eval().requires_grad_(False)


@functools.lru_cache(maxsize=2)
def cached_vae(location: str, device: str) -> torch.nn.Module:
    """`load_vae`, once per (location, device) in this process (sample grids and FID during training)."""
    return load_vae(location, device)


# ------------------------------------------------------------------------------------------------ encoders


@dataclass(frozen=True)
class PixelEncoder:
    """EDM's and EDM2's pixel space (``StandardRGBEncoder``): uint8 <-> x / 127.5 - 1."""

    kind = "StandardRGBEncoder"
    dataset_kind = "png"      # what `full.store.dataset_zip.ImageZipDataset.kind` must be
    latent = False

    def raw_channels(self, channels: int) -> int:
        """Channels of a dataset item for a network with `channels` channels."""
        return channels

    def pixel_shape(self, channels: int, resolution: int) -> tuple[int, int, int]:
        """(C, H, W) of the decoded images of a network with `channels` x `resolution`^2 outputs."""
        return channels, resolution, resolution

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw pixels (uint8 NCHW) to dataset items: the pixels themselves."""
        return pixels

    def encode_dataset_batch(self, raw: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """Dataset items (uint8 NCHW) to model space: x / 127.5 - 1 in float32 (no random draw)."""
        return raw.to(torch.float32) / 127.5 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space to uint8 NCHW pixels with EDM's rounding: clip(x * 127.5 + 128, 0, 255)."""
        return (x.to(torch.float32) * 127.5 + 128).clip(0, 255).to(torch.uint8)

    def with_vae(self, location=None, device: str | torch.device = "cpu", *, what: str = "--vae") -> "PixelEncoder":
        """Pixels need no VAE: a given one is refused, so a mistaken --vae is not silently ignored."""
        if location is not None:
            raise ConfigError(f"{what} {location}: the network works in pixel space and needs no VAE; drop {what}")
        return self


@dataclass(frozen=True)
class VAEEncoder:
    """EDM2's latent space (``StabilityVAEEncoder``): dataset items are the VAE posterior's mean and std
    [2C, h, w]; model space is (mean + std n) scale + bias, n ~ N(0, I); `decode` needs the VAE (`with_vae`)."""

    vae_name: str
    scale: tuple[float, ...]
    bias: tuple[float, ...]
    batch_size: int = EDM2_VAE_BATCH
    vae: Any = dataclasses.field(default=None, compare=False, repr=False)

    kind = "StabilityVAEEncoder"
    dataset_kind = "npy"
    latent = True

    @property
    def channels(self) -> int:
        return len(self.scale)

    def raw_channels(self, channels: int) -> int:
        return 2 * channels

    def pixel_shape(self, channels: int, resolution: int) -> tuple[int, int, int]:
        """(C, H, W) of the decoded images: the VAE's output channels, the side times its upsampling factor
        2^(levels - 1) (diffusers' ``vae_scale_factor``)."""
        config = self._need_vae().config
        factor = 2 ** (len(config.block_out_channels) - 1)
        return config.out_channels, resolution * factor, resolution * factor

    def _constants(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        return (torch.tensor(self.scale, dtype=torch.float32, device=x.device).reshape(shape),
                torch.tensor(self.bias, dtype=torch.float32, device=x.device).reshape(shape))

    def encode_dataset_batch(self, raw: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """Raw latents [N, 2C, h, w] (mean, std) to model space [N, C, h, w]: (mean + std n) * scale + bias with
        n ~ N(0, I) from `rng` (on raw's device; None = torch's global generator, as EDM2)."""
        if raw.ndim != 4 or raw.shape[1] != 2 * self.channels:
            raise ValueError(f"raw latents must be [N, {2 * self.channels}, H, W], got {tuple(raw.shape)}")
        mean, std = raw.to(torch.float32).chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=rng, device=mean.device, dtype=torch.float32)
        scale, bias = self._constants(mean)
        return (mean + noise * std) * scale + bias

    def with_vae(self, location=None, device: str | torch.device = "cpu", *, what: str = "--vae") -> "VAEEncoder":
        """This encoder with its VAE: `location` is a folder or hub id (`load_vae`) or an AutoencoderKL module.
        None is refused in one line: a latent network cannot be decoded or encoded without its VAE."""
        if location is None:
            raise ConfigError(f"the network works in the latent space of the VAE {self.vae_name}; pass {what} "
                              f"PATH_OR_ID (a diffusers AutoencoderKL folder, or the hub id {self.vae_name})")
        vae = location if isinstance(location, torch.nn.Module) else load_vae(location, device, what=what)
        latent_channels = getattr(getattr(vae, "config", None), "latent_channels", None)
        if latent_channels is not None and latent_channels != self.channels:
            raise ConfigError(f"{what} {location if not isinstance(location, torch.nn.Module) else ''}: the VAE has "
                              f"{latent_channels} latent channels but the network's encoder has {self.channels}; "
                              f"give the VAE the network was trained with ({self.vae_name})")
        return dataclasses.replace(self, vae=vae)

    def _need_vae(self) -> torch.nn.Module:
        if self.vae is None:
            raise ConfigError(f"decoding or encoding latents needs the VAE {self.vae_name}; pass --vae PATH_OR_ID")
        return self.vae

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw pixels (uint8 NCHW, gray repeated to the VAE's input channels) to raw latents: the posterior's
        mean and std of pixels / 255, concatenated [N, 2C, h, w] float32, `batch_size` images per VAE call."""
        vae = self._need_vae()
        device = next(vae.parameters()).device
        x = pixels.to(device=device, dtype=torch.float32) / 255
        wanted = getattr(vae.config, "in_channels", x.shape[1])
        if x.shape[1] == 1 and wanted != 1:
            x = x.repeat(1, wanted, 1, 1)
        out = []
        for batch in x.split(self.batch_size):
            posterior = vae.encode(batch).latent_dist
            out.append(torch.cat([posterior.mean, posterior.std], dim=1).to(torch.float32))
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space [N, C, h, w] to uint8 NCHW pixels: ((x - bias) / scale) through the VAE decoder,
        `batch_size` at a time, then clamp(0, 1) * 255 truncated to uint8 (EDM2's conversion)."""
        vae = self._need_vae()
        device = next(vae.parameters()).device
        x = x.to(device=device, dtype=torch.float32)
        scale, bias = self._constants(x)
        x = (x - bias) / scale
        pixels = torch.cat([vae.decode(batch, return_dict=False)[0] for batch in x.split(self.batch_size)])
        return pixels.to(torch.float32).clamp(0, 1).mul(255).to(torch.uint8)


Encoder = PixelEncoder | VAEEncoder


def encoder_for(source: torch.nn.Module | dict | None) -> Encoder:
    """The encoder of a network (its ``encoder`` attribute) or of an encoder record; None or an absent record
    means pixels (EDM's networks)."""
    record = getattr(source, "encoder", None) if isinstance(source, torch.nn.Module) else source
    if record is None or record.get("kind") == PixelEncoder.kind:
        return PixelEncoder()
    if record.get("kind") != VAEEncoder.kind:
        raise ConfigError(f"unknown encoder {record.get('kind')!r}; networks record StandardRGBEncoder or "
                          f"StabilityVAEEncoder")
    return VAEEncoder(record["vae_name"], tuple(float(v) for v in record["scale"]),
                      tuple(float(v) for v in record["bias"]), int(record.get("batch_size", EDM2_VAE_BATCH)))


def open_encoder(net: torch.nn.Module, vae: str | None, device: str | torch.device = "cpu", *,
                 what: str = "--vae") -> Encoder:
    """`encoder_for(net)` ready to decode: a latent network gets its VAE from `vae` (refused in one line when
    missing), a pixel network refuses a `vae` it would not use."""
    return encoder_for(net).with_vae(vae, device, what=what)


def decoder_for(net: torch.nn.Module, vae: str | None, device: torch.device | None = None) -> Encoder:
    """`encoder_for(net)` with its VAE loaded once per process (`cached_vae`) on `device` (default: net's), for
    sample grids and FID during training; a pixel network ignores `vae`."""
    encoder = encoder_for(net)
    if not encoder.latent:
        return encoder
    device = str(device if device is not None else next(net.parameters()).device)
    return encoder.with_vae(cached_vae(vae, device) if vae else None)
