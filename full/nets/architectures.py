"""EDM's network architectures as data, and one function that builds an `EDMPrecond` from a name.

`EDM_ARCHITECTURES` holds the keyword arguments NVlabs/edm ``train.py`` passes for ``--arch ddpmpp``,
``--arch ncsnpp`` and ``--arch adm`` (Karras et al. 2022, Appendix F.2): DDPM++ and NCSN++ are `SongUNet`s
(Song et al. 2021) that differ in the noise embedding, the encoder and the resampling filter; ADM is
`DhariwalUNet` (Dhariwal & Nichol 2021). Anything else (``model_channels``, ``channel_mult``, ``dropout``,
``augment_dim``, ...) is an override, as EDM's ``--cbase``, ``--cres``, ``--dropout`` and ``--augment`` are.

`build_edm2_net` builds EDM2's magnitude-preserving U-Net (`full.nets.edm2.EDM2Precond`, Karras et al. 2024) at
any size, for small teachers trained with EDM2's uncertainty-weighted loss (``full.train_teacher --arch edm2``).

`EDM_RELEASED` lists the overrides of the released EDM checkpoints (``edm-cifar10-32x32-uncond-vp.pkl``
and friends), so a randomly initialised copy of any of them is one call:
``build_edm(*EDM_RELEASED["cifar10-32x32-uncond-vp"])``.
"""
from __future__ import annotations

import inspect

import torch

from full.errors import ConfigError
from full.nets.edm import ARCHITECTURES, GroupNorm

# NVlabs/edm train.py, "Network architecture": the arguments each --arch adds to EDMPrecond.
EDM_ARCHITECTURES: dict[str, dict] = {
    "ddpmpp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                   channel_mult=[2, 2, 2]),
    "ncsnpp": dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                   decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128,
                   channel_mult=[2, 2, 2]),
    "adm": dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4]),
}

# The released EDM checkpoints: (arch, resolution, channels, label_dim, overrides). Training with --augment > 0
# sets augment_dim 9; the dropout and --cres values are those of EDM's README training commands.
EDM_RELEASED: dict[str, tuple[str, int, int, int, dict]] = {
    "cifar10-32x32-uncond-vp": ("ddpmpp", 32, 3, 0, dict(augment_dim=9, dropout=0.13)),
    "cifar10-32x32-cond-vp": ("ddpmpp", 32, 3, 10, dict(augment_dim=9, dropout=0.13)),
    "cifar10-32x32-uncond-ve": ("ncsnpp", 32, 3, 0, dict(augment_dim=9, dropout=0.13)),
    "cifar10-32x32-cond-ve": ("ncsnpp", 32, 3, 10, dict(augment_dim=9, dropout=0.13)),
    "ffhq-64x64-uncond-vp": ("ddpmpp", 64, 3, 0, dict(augment_dim=9, dropout=0.05, channel_mult=[1, 2, 2, 2])),
    "ffhq-64x64-uncond-ve": ("ncsnpp", 64, 3, 0, dict(augment_dim=9, dropout=0.05, channel_mult=[1, 2, 2, 2])),
    "afhqv2-64x64-uncond-vp": ("ddpmpp", 64, 3, 0, dict(augment_dim=9, dropout=0.25, channel_mult=[1, 2, 2, 2])),
    "afhqv2-64x64-uncond-ve": ("ncsnpp", 64, 3, 0, dict(augment_dim=9, dropout=0.25, channel_mult=[1, 2, 2, 2])),
    "imagenet-64x64-cond-adm": ("adm", 64, 3, 1000, dict(dropout=0.1)),
}

_PRECOND_ARGUMENTS = {"use_fp16", "sigma_min", "sigma_max", "sigma_data"}


def _csv(values) -> str:
    return ",".join(map(str, values))


def _allowed_overrides(model_type: str) -> set[str]:
    fixed = {"img_resolution", "in_channels", "out_channels", "label_dim"}
    return set(inspect.signature(ARCHITECTURES[model_type]).parameters) - fixed | _PRECOND_ARGUMENTS


def _check_levels(halving: str, resolution: int, channels: int, mult: list, kwargs: dict, overrides: dict) -> None:
    """What cannot build or run, in one line: a non-positive size, a resolution that is not a power of two, more
    levels than the resolution halves, attention at a resolution the network does not have."""
    for name, value in (("resolution", resolution), ("channels", channels)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"a network needs a positive {name}, got {value!r}")
    if resolution & (resolution - 1):
        raise ConfigError(f"resolution {resolution} is not a power of two; {halving} it at every level")
    if not mult or min(mult) < 1 or kwargs.get("model_channels", 1) < 1:
        raise ConfigError(f"--model-channels {kwargs.get('model_channels')} and --channel-mult {_csv(mult)} must be "
                          f"positive, with at least one level")
    if resolution >> (len(mult) - 1) < 1:
        raise ConfigError(f"--channel-mult {_csv(mult)} has {len(mult)} levels, but a {resolution}x{resolution} "
                          f"image can be halved only {resolution.bit_length() - 1} times; give at most "
                          f"{resolution.bit_length()} multipliers")
    levels = [resolution >> level for level in range(len(mult))]
    wrong = [r for r in kwargs.get("attn_resolutions", []) if r not in levels]
    if "attn_resolutions" in overrides and wrong:
        raise ConfigError(f"--attn-resolutions {wrong[0]} is not a level of this network; its levels are "
                          f"{', '.join(map(str, levels))}")


def architecture_kwargs(arch: str, resolution: int, channels: int, label_dim: int = 0, **overrides) -> dict:
    """The full keyword arguments of `EDMPrecond` for `arch` with `overrides` on top, checked for what cannot
    build or run: an unknown name or argument, a resolution that is not a power of two, more levels than the
    resolution halves, attention at a resolution the network does not have."""
    if arch not in EDM_ARCHITECTURES:
        raise ConfigError(f"--arch {arch!r} is not an EDM architecture; use one of {', '.join(EDM_ARCHITECTURES)}")
    kwargs = {**EDM_ARCHITECTURES[arch], **overrides}
    unknown = sorted(set(overrides) - _allowed_overrides(kwargs["model_type"]))
    if unknown:
        raise ConfigError(f"--arch {arch} takes no argument {unknown[0]!r}; it takes "
                          f"{', '.join(sorted(_allowed_overrides(kwargs['model_type'])))}")
    if not isinstance(label_dim, int) or label_dim < 0:
        raise ConfigError(f"label_dim must be 0 (unconditional) or a class count, got {label_dim!r}")
    _check_levels("EDM's U-Nets halve", resolution, channels, list(kwargs.get("channel_mult", [])), kwargs, overrides)
    return dict(img_resolution=resolution, img_channels=channels, label_dim=label_dim, **kwargs)


def _check_group_norms(net: torch.nn.Module, kwargs: dict) -> None:
    """EDM's GroupNorm uses min(32, C // 4) groups, which must divide C; say which width breaks the rule."""
    for name, module in net.named_modules():
        if isinstance(module, GroupNorm):
            width = module.weight.shape[0]
            if module.num_groups < 1 or width % module.num_groups:
                raise ConfigError(
                    f"--model-channels {kwargs['model_channels']} with --channel-mult {_csv(kwargs['channel_mult'])} "
                    f"gives a {width}-channel layer ({name}) that EDM's group normalisation cannot split into "
                    f"{module.num_groups} equal groups (it uses min(32, channels // 4)); use a --model-channels "
                    f"that is a multiple of 32, or of 4 for narrow networks")


def build_edm(arch: str, resolution: int, channels: int, label_dim: int = 0, **overrides) -> torch.nn.Module:
    """A randomly initialised `EDMPrecond` around EDM's `arch` ("ddpmpp", "ncsnpp" or "adm") for
    `resolution` x `resolution` images with `channels` channels and `label_dim` classes (0 = unconditional),
    built by `full.store.network_file.build_network` (so `save_network` can write it). `overrides` replace
    or add U-Net or preconditioner arguments, e.g. ``model_channels=32, channel_mult=[1, 2, 2], dropout=0.1``.
    Raises `ConfigError` (one line, naming the arguments as ``--model-channels`` style options) for sizes that
    cannot build or run."""
    from full.store.network_file import build_network
    kwargs = architecture_kwargs(arch, resolution, channels, label_dim, **overrides)
    net = build_network("EDMPrecond", **kwargs)
    _check_group_norms(net, kwargs)
    return net


# EDM2's U-Net: the arguments a small teacher may set (the rest keep NVlabs/edm2 networks_edm2.py's defaults).
EDM2_OVERRIDES = {"model_channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout", "use_fp16",
                  "channel_mult_noise", "channel_mult_emb", "label_balance", "concat_balance", "logvar_channels"}


def build_edm2_net(resolution: int, channels: int, label_dim: int = 0, **overrides) -> torch.nn.Module:
    """A randomly initialised `EDM2Precond` (EDM2's magnitude-preserving U-Net with its logvar head) for
    `resolution` x `resolution` images or latents with `channels` channels and `label_dim` classes, built by
    `full.store.network_file.build_network` (so `save_network` can write it); fp32 everywhere unless
    ``use_fp16=True`` is given (EDM2's default, which only matters on CUDA). Raises `ConfigError` (one line) for
    sizes that cannot build, with the same rules as `architecture_kwargs`."""
    from full.store.network_file import build_network
    unknown = sorted(set(overrides) - EDM2_OVERRIDES)
    if unknown:
        raise ConfigError(f"--arch edm2 takes no argument {unknown[0]!r}; it takes {', '.join(sorted(EDM2_OVERRIDES))}")
    kwargs = {"use_fp16": False, **overrides}
    _check_levels("EDM2's U-Net halves", resolution, channels, list(kwargs.get("channel_mult", [1, 2, 3, 4])), kwargs,
                  overrides)
    return build_network("EDM2Precond", img_resolution=resolution, img_channels=channels, label_dim=label_dim,
                         **kwargs)
