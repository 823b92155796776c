"""SiD training configuration and the presets table (presets are data, not code branches)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from full.errors import ConfigError
from full.method.generator import SIGMA_INIT
from full.options import AT_LEAST_ONE, NONNEGATIVE, POSITIVE, PROBABILITY, Choices, Range, check_fields, option

EDM_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class SiDConfig:
    # Teacher and generator
    teacher: str = option("", "teacher network: EDM .pkl, or our .safetensors/.json (path)")
    resolution: int | None = option(None, "expected teacher resolution (checked; None = any)", AT_LEAST_ONE)
    label_dim: int | None = option(None, "expected teacher label count, 0 = unconditional (checked; None = any)",
                                   NONNEGATIVE)
    sigma_init: float = option(SIGMA_INIT, "generator noise level: x_g = G(sigma_init z, sigma_init)", POSITIVE)
    # SiD objective
    alpha: float = option(1.2, "alpha in the generator loss L2 - alpha L1")
    t_max: float = option(800, "generator-step noise range t ~ U[0, t_max/1000] (Karras schedule)", Range(0, 1000))
    # Optimisation
    batch: int = option(256, "images per iteration, over all ranks", AT_LEAST_ONE)
    batch_gpu: int | None = option(None, "images per rank per pass (gradient accumulation if smaller); None = all",
                                   AT_LEAST_ONE)
    lr: float = option(1e-5, "Adam learning rate of f_psi", NONNEGATIVE)
    glr: float = option(1e-5, "Adam learning rate of G", NONNEGATIVE)
    g_beta1: float = option(0.0, "Adam beta1 of G (f_psi uses beta1 = 0)", Range(0, 1, high_open=True))
    adam_eps: float = option(1e-8, "Adam epsilon of both optimisers", POSITIVE)
    ls: float = option(1.0, "loss scale of the f_psi loss: sum over pixels * ls / batch", POSITIVE)
    lsg: float = option(100.0, "loss scale of the G loss: sum over pixels * lsg / batch", POSITIVE)
    dropout: float = option(0.13, "dropout probability in G and f_psi", Range(0, 1, high_open=True))
    augment: float = option(0.0, "probability of ADA-style augmentation in the f_psi step (0 = off)", PROBABILITY)
    ema: float = option(0.5, "half-life of the EMA of G in Mimg (ramped up as 0.05 * images seen)", NONNEGATIVE)
    duration: float = option(500.0, "training length in Mimg", POSITIVE)
    # Precision and memory
    precision: str = option("auto", "fp32, bf16, fp16 (dynamic loss scaling) or auto (bf16 on capable GPUs, else fp32)",
                            Choices(PRECISIONS))
    checkpointing: bool = option(False, "activation checkpointing through f_phi and f_psi in the G step")
    # Bookkeeping
    tick: float = option(10.0, "kimg between log lines", POSITIVE)
    snap: int = option(50, "ticks between G_ema snapshots and sample grids", AT_LEAST_ONE)
    state_every: int = option(50, "ticks between training states (also at the end and on Ctrl-C)", AT_LEAST_ONE)
    keep: int = option(3, "training states to keep", AT_LEAST_ONE)
    grid: int = option(64, "images in the sample grid (fixed seeds 0..grid-1)", Range(1, 1024))
    metric_every: int = option(0, "ticks between FID evaluations (0 = never)", NONNEGATIVE)
    metric_ref: str = option("", "reference statistics .npz for FID during training")
    metric_num: int = option(10000, "images per FID evaluation during training", Range(2))
    detector: str = option("", "feature network for FID during training (path)")
    seed: int = option(0, "global seed: all noise is a function of (seed, iteration, chunk)")
    labels_from: str = option("", "draw class labels from this dataset zip instead of uniformly")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    threads: int = option(0, "CPU threads (0 = torch default)", NONNEGATIVE)

    def validate(self) -> "SiDConfig":
        """Raise `ConfigError` with one line for values that cannot work."""
        check_fields(self)
        if self.metric_every and not (self.metric_ref and self.detector):
            raise ConfigError("--metric-every needs --metric-ref REF.npz and --detector PATH")
        return self


# Paper presets, from mingyuanzhou/SiD run_sid.sh (4-GPU commands; every one uses t_max 800,
# init_sigma 2.5, ls 1, lsg 100) and the teachers from EDM's pretrained directory.
PRESETS: dict[str, dict] = {
    "cifar10-uncond": dict(teacher=EDM_URL + "edm-cifar10-32x32-uncond-vp.pkl", resolution=32, label_dim=0,
                           alpha=1.2, batch=256, batch_gpu=16, lr=1e-5, glr=1e-5, dropout=0.13, augment=0.12,
                           ema=0.5, g_beta1=0.0, precision="fp32", duration=500, tick=10),
    "cifar10-cond": dict(teacher=EDM_URL + "edm-cifar10-32x32-cond-vp.pkl", resolution=32, label_dim=10,
                         alpha=1.2, batch=256, batch_gpu=16, lr=1e-5, glr=1e-5, dropout=0.13, augment=0.12,
                         ema=0.5, g_beta1=0.0, precision="fp32", duration=800, tick=10),
    "imagenet64-cond": dict(teacher=EDM_URL + "edm-imagenet-64x64-cond-adm.pkl", resolution=64, label_dim=1000,
                            alpha=1.2, batch=8192, batch_gpu=16, lr=4e-6, glr=4e-6, dropout=0.1, augment=0.0,
                            ema=2.0, g_beta1=0.0, precision="fp16", duration=1000, tick=20),
    "ffhq64": dict(teacher=EDM_URL + "edm-ffhq-64x64-uncond-vp.pkl", resolution=64, label_dim=0,
                   alpha=1.2, batch=512, batch_gpu=32, lr=1e-5, glr=1e-5, dropout=0.05, augment=0.15,
                   ema=0.5, g_beta1=0.9, precision="fp16", duration=500, tick=10),
    "afhqv2-64": dict(teacher=EDM_URL + "edm-afhqv2-64x64-uncond-vp.pkl", resolution=64, label_dim=0,
                      alpha=1.0, batch=512, batch_gpu=32, lr=5e-6, glr=5e-6, dropout=0.05, augment=0.15,
                      ema=0.5, g_beta1=0.0, precision="fp16", duration=500, tick=10),
    # CPU preset: the shipped 16x16 MNIST teacher (MNIST_FINDINGS.md: batch 32, lr 3e-5). 3000 iterations,
    # about 30 minutes on 2 cores, made the shipped assets/mnist16-sid generator (README, "A real result on CPU").
    "mnist16-cpu": dict(teacher="assets/mnist16-teacher.json", resolution=16, label_dim=0,
                        alpha=1.2, batch=32, batch_gpu=32, lr=3e-5, glr=3e-5, dropout=0.1, augment=0.0,
                        ema=0.01, g_beta1=0.0, precision="fp32", duration=0.096, tick=1.6, snap=2, state_every=2,
                        grid=64, device="cpu", metric_every=1, metric_num=1000,
                        detector="assets/mnist16-classifier.json", metric_ref="assets/mnist16-ref.npz"),
}


def resolve(preset: str | None, overrides: dict) -> SiDConfig:
    """Preset row (if any) with command-line overrides on top; unknown names raise `ConfigError`."""
    fields = {f.name for f in dataclasses.fields(SiDConfig)}
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    return SiDConfig(**{**(PRESETS[preset] if preset else {}), **overrides}).validate()
