"""SiD training configuration and the presets table (presets are data, not code branches)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from full.errors import ConfigError
from full.method.generator import SIGMA_INIT
from full.method.losses import GENERATOR_OBJECTIVES
from full.options import AT_LEAST_ONE, NONNEGATIVE, POSITIVE, PROBABILITY, Choices, Range, check_fields, option

EDM_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class SiDConfig:
    # Teacher and generator
    teacher: str = option("", "teacher network: EDM .pkl, or our .safetensors/.json (path or URL; a resume "
                              "checks its weights, not its path)", bookkeeping=True)
    resolution: int | None = option(None, "expected teacher resolution (checked; None = any)", AT_LEAST_ONE,
                                    bookkeeping=True)
    label_dim: int | None = option(None, "expected teacher label count, 0 = unconditional (checked; None = any)",
                                   NONNEGATIVE, bookkeeping=True)
    sigma_init: float = option(SIGMA_INIT, "generator noise level: x_g = G(sigma_init z, sigma_init)", POSITIVE)
    init_generator: str = option("", "start G and G_ema from this distilled generator instead of the teacher "
                                     "(SiD²A: a SiD snapshot, ours or a SiD .pkl); f_psi still starts from the teacher",
                                 bookkeeping=True)
    # Objective
    objective: str = option("sid", "generator objective: sid, sida (SiD + GAN on real --data), or a peer: "
                                   "naive, projected, diff_instruct, dmd", Choices(tuple(GENERATOR_OBJECTIVES)))
    alpha: float = option(1.2, "alpha in the generator loss L2 - alpha L1", Range(-10, 10))
    t_max: float = option(800, "generator-step noise range t ~ U[0, t_max/1000] (Karras schedule)", Range(0, 1000))
    data: str = option("", "real images for SiDA: the teacher's training set as an EDM dataset zip (streamed; "
                           "a resume checks its contents, not its path)", bookkeeping=True)
    vae: str = option("", "latent-space teachers (EDM2 img512): their VAE, a diffusers AutoencoderKL folder or hub id "
                          "(stabilityai/sd-vae-ft-mse), to decode sample grids and FID images", bookkeeping=True)
    lsd: float = option(1.0, "SiDA: loss scale of the discriminator term in the f_psi step", NONNEGATIVE)
    lsg_gan: float = option(0.01, "SiDA: loss scale of the GAN term in the G step", NONNEGATIVE)
    gan_after_kimg: float = option(200.0, "SiDA: the GAN term joins the G loss after this many kimg", NONNEGATIVE)
    g_after_kimg: float = option(0.0, "kimg of f_psi-only training before G moves (SiDA: 100, a head start)",
                                 NONNEGATIVE)
    psi_grad_clip: float = option(0.0, "clip f_psi's gradient entries to +-this value (0 = off; SiDA: 1)",
                                  NONNEGATIVE)
    p_mean: float = option(-1.2, "f_psi step: ln sigma ~ N(p_mean, p_std^2) (EDM -1.2; EDM2 img512 -0.4, "
                                 "img64 -0.8)", Range(-10, 10))
    p_std: float = option(1.2, "f_psi step: std of ln sigma (EDM 1.2; EDM2 img512 1.0, img64 1.6)", POSITIVE)
    force_normalization: bool = option(True, "EDM2 networks: renormalise G's and f_psi's weights to unit norm "
                                             "before every step (EDM2's forced weight normalisation)")
    return_logvar: bool = option(True, "EDM2 teachers: use f_psi's logvar head (its loss weighted by exp(-logvar) "
                                       "plus logvar, both generator terms divided by exp(logvar)); false = EDM's "
                                       "plain losses")
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
    duration: float = option(500.0, "training length in Mimg", POSITIVE, bookkeeping=True)
    # Precision and memory
    precision: str = option("auto", "fp32, bf16, fp16 (dynamic loss scaling) or auto (bf16 on capable GPUs, else fp32)",
                            Choices(PRECISIONS))
    checkpointing: bool = option(False, "activation checkpointing through f_phi and f_psi in the G step",
                                 bookkeeping=True)
    # Bookkeeping
    tick: float = option(10.0, "kimg between log lines", POSITIVE, bookkeeping=True)
    snap: int = option(50, "ticks between G_ema snapshots and sample grids", AT_LEAST_ONE, bookkeeping=True)
    state_every: int = option(50, "ticks between training states (also at the end and on a stop signal)",
                              AT_LEAST_ONE, bookkeeping=True)
    keep: int = option(3, "training states to keep", AT_LEAST_ONE, bookkeeping=True)
    grid: int = option(64, "images in the sample grid (fixed seeds 0..grid-1)", Range(1, 1024), bookkeeping=True)
    metric_every: int = option(0, "ticks between FID evaluations (0 = never)", NONNEGATIVE, bookkeeping=True)
    metric_ref: str = option("", "reference statistics for FID during training: EDM's .npz or EDM2's .pkl",
                             bookkeeping=True)
    metric_num: int = option(10000, "images per FID evaluation during training", Range(2), bookkeeping=True)
    detector: str = option("", "feature network for FID during training (path)", bookkeeping=True)
    seed: int = option(0, "global seed: all noise is a function of (seed, iteration, chunk)")
    labels_from: str = option("", "draw class labels from this dataset zip instead of uniformly")
    nan_patience: int = option(100, "stop with an error after this many consecutive iterations in which every "
                                    "sample was dropped as non-finite", AT_LEAST_ONE, bookkeeping=True)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", bookkeeping=True)
    threads: int = option(0, "CPU threads (0 = torch default)", NONNEGATIVE, bookkeeping=True)

    def validate(self) -> "SiDConfig":
        """Raise `ConfigError` with one line for values that cannot work."""
        check_fields(self)
        if self.metric_every and not (self.metric_ref and self.detector):
            raise ConfigError("--metric-every needs --metric-ref REF.npz and --detector PATH")
        if self.batch_gpu is not None and self.batch_gpu > self.batch:
            raise ConfigError(f"--batch-gpu {self.batch_gpu} is larger than --batch {self.batch}")
        return self

    def mathematics(self) -> dict:
        """The fields that change what is computed (everything but bookkeeping); a resume must keep them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("bookkeeping")}


# Paper presets, from mingyuanzhou/SiD run_sid.sh (4-GPU commands; every one uses t_max 800,
# init_sigma 2.5, ls 1, lsg 100; --fp16 1 runs use Adam eps 1e-6, sid_train.py) and the teachers from EDM's
# pretrained directory.
PRESETS: dict[str, dict] = {
    "cifar10-uncond": dict(teacher=EDM_URL + "edm-cifar10-32x32-uncond-vp.pkl", resolution=32, label_dim=0,
                           alpha=1.2, batch=256, batch_gpu=16, lr=1e-5, glr=1e-5, dropout=0.13, augment=0.12,
                           ema=0.5, g_beta1=0.0, precision="fp32", duration=500, tick=10),
    "cifar10-cond": dict(teacher=EDM_URL + "edm-cifar10-32x32-cond-vp.pkl", resolution=32, label_dim=10,
                         alpha=1.2, batch=256, batch_gpu=16, lr=1e-5, glr=1e-5, dropout=0.13, augment=0.12,
                         ema=0.5, g_beta1=0.0, precision="fp32", duration=800, tick=10),
    "imagenet64-cond": dict(teacher=EDM_URL + "edm-imagenet-64x64-cond-adm.pkl", resolution=64, label_dim=1000,
                            alpha=1.2, batch=8192, batch_gpu=16, lr=4e-6, glr=4e-6, dropout=0.1, augment=0.0,
                            ema=2.0, g_beta1=0.0, precision="fp16", adam_eps=1e-6, duration=1000, tick=20),
    "ffhq64": dict(teacher=EDM_URL + "edm-ffhq-64x64-uncond-vp.pkl", resolution=64, label_dim=0,
                   alpha=1.2, batch=512, batch_gpu=32, lr=1e-5, glr=1e-5, dropout=0.05, augment=0.15,
                   ema=0.5, g_beta1=0.9, precision="fp16", adam_eps=1e-6, duration=500, tick=10),
    "afhqv2-64": dict(teacher=EDM_URL + "edm-afhqv2-64x64-uncond-vp.pkl", resolution=64, label_dim=0,
                      alpha=1.0, batch=512, batch_gpu=32, lr=5e-6, glr=5e-6, dropout=0.05, augment=0.15,
                      ema=0.5, g_beta1=0.0, precision="fp16", adam_eps=1e-6, duration=500, tick=10),
    # CPU preset: the shipped 16x16 MNIST teacher (a feasibility run found batch 32, lr 3e-5 best). 3000
    # iterations, about 30 minutes on 2 cores, made assets/mnist16-sid (README, "A real result on CPU").
    "mnist16-cpu": dict(teacher="assets/mnist16-teacher.json", resolution=16, label_dim=0,
                        alpha=1.2, batch=32, batch_gpu=32, lr=3e-5, glr=3e-5, dropout=0.1, augment=0.0,
                        ema=0.01, g_beta1=0.0, precision="fp32", duration=0.096, tick=1.6, snap=2, state_every=2,
                        grid=64, device="cpu", metric_every=1, metric_num=1000,
                        detector="assets/mnist16-classifier.json", metric_ref="assets/mnist16-ref.npz"),
}

# SiDA presets, from the official `sida` branch of mingyuanzhou/SiD (run_sida.sh with sida_train.py's defaults and
# sida_training_loop.py): alpha 1.0, lsd 1, lsg_gan 0.01, the GAN term after 200k images, G after a 100k-image head
# start of the fake score, f_psi's gradient entries clipped at 1; everything else as SiD (t_max 800, sigma_init
# 2.5, ls 1, lsg 100). --data must name the teacher's training set (EDM dataset zip); start from a distilled SiD
# generator with --init-generator for SiD²A.
SIDA = dict(objective="sida", alpha=1.0, lsd=1.0, lsg_gan=0.01, gan_after_kimg=200, g_after_kimg=100,
            psi_grad_clip=1.0)
PRESETS.update({
    "sida-cifar10-uncond": dict(PRESETS["cifar10-uncond"], **SIDA, batch_gpu=32, duration=300),
    "sida-cifar10-cond": dict(PRESETS["cifar10-cond"], **SIDA, batch_gpu=32, duration=300),
    "sida-imagenet64-cond": dict(PRESETS["imagenet64-cond"], **SIDA, duration=300),
    "sida-ffhq64": dict(PRESETS["ffhq64"], **SIDA, g_beta1=0.0, batch_gpu=64, duration=200),
    "sida-afhqv2-64": dict(PRESETS["afhqv2-64"], **SIDA, batch_gpu=64, duration=200),
})

# CPU presets for the shipped MNIST teacher with real data (MNIST-5k at 16x16, `python -m full.dataset convert
# --source mnist5k --dest data/mnist16.zip --resolution 16`). Our own settings, not the paper's: a run of a few
# hundred iterations needs f_psi (and so its encoder, the discriminator) to move faster than the paper's 1e-5, and
# a GAN weight that matters from the start (lsg_gan 1: the GAN gradient is several times the SiD gradient). A
# sweep of lsg_gan (0, 0.1, 1, 3) from the SiD generator is in the README ("A real result on CPU").
MNIST16_SIDA = dict(PRESETS["mnist16-cpu"], **dict(SIDA, lsd=10.0, lsg_gan=1.0, gan_after_kimg=0.0),
                    data="data/mnist16.zip", lr=1e-4, duration=0.0256, metric_num=2000)
PRESETS.update({
    # SiDA from the teacher: G starts as the teacher, as in SiD.
    "mnist16-sida-cpu": dict(MNIST16_SIDA, g_after_kimg=0.0),
    # SiD²A from the shipped SiD generator: f_psi starts from the teacher and gets a 3.2-kimg head start.
    "mnist16-sid2a-cpu": dict(MNIST16_SIDA, init_generator="assets/mnist16-sid.json", glr=1e-5, g_after_kimg=3.2),
})


def resolve(preset: str | None, overrides: dict) -> SiDConfig:
    """Preset row (if any) with command-line overrides on top; unknown names raise `ConfigError`."""
    fields = {f.name for f in dataclasses.fields(SiDConfig)}
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    return SiDConfig(**{**(PRESETS[preset] if preset else {}), **overrides}).validate()


# ------------------------------------------------------------------------------------------------ EDM2 teachers
# SiD and SiDA on EDM2 (Karras et al., CVPR 2024), from mingyuanzhou/SiD branch sida: run_sida_edm2.sh (per size:
# batch 2048, lr = glr 5e-5, ls 1, lsg 100, lsd 100, lsg_gan 0.01, alpha 1, init_sigma 2.5, tmax 800, ema 2, augment
# 0, fp16, duration 200 Mimg (xxl 100), tick 10, snap 50, dump 200, batch-gpu xs 64, s 64, m 32, l 32, xl 16, xxl 2;
# the s run alone passes --force_normalization 0 and --return_logvar 0), sida_edm2_train.py (fake-score loss
# P_mean -0.4, P_std 1.0 and dropout 0 (xs, s) or 0.1 per size; Adam betas (0, 0.999), eps 1e-6 under --fp16) and
# sida_training_edm2/sida_training_loop_edm2.py (G steps after 100k images, the GAN term after 200k, f_psi's gradient
# clipping commented out). We run bf16 where the official runs fp16 (same range as fp32, no loss scaling; set
# --precision fp16 to match it exactly). SiD (no GAN) is the same script with --use_gan 0: no head start. img64 has
# no official SiD recipe: its rows carry the img512 recipe over with EDM2's img64 P_mean -0.8, P_std 1.6
# (NVlabs/edm2 train_edm2.py config_presets). Teachers: the FID-best post-hoc EMA reconstructions of NVlabs/edm2
# generate_images.py (config_presets 'edm2-img512-*-fid', 'edm2-img64-*-fid'). img512 works in the latent space of
# stabilityai/sd-vae-ft-mse (--vae: a hub id, downloaded once by diffusers, or a local folder); SiDA's --data is the
# latent training set (python -m full.dataset convert-latent, EDM2's img512-sd.zip).
EDM2_URL = "https://nvlabs-fi-cdn.nvidia.com/edm2/posthoc-reconstructions/"
EDM2_TEACHERS = {  # size: (teacher file, dropout, batch per GPU in run_sida_edm2.sh)
    "img512-xs": ("edm2-img512-xs-2147483-0.135.pkl", 0.0, 64),
    "img512-s": ("edm2-img512-s-2147483-0.130.pkl", 0.0, 64),
    "img512-m": ("edm2-img512-m-2147483-0.100.pkl", 0.1, 32),
    "img512-l": ("edm2-img512-l-1879048-0.085.pkl", 0.1, 32),
    "img512-xl": ("edm2-img512-xl-1342177-0.085.pkl", 0.1, 16),
    "img512-xxl": ("edm2-img512-xxl-0939524-0.070.pkl", 0.1, 2),
    "img64-s": ("edm2-img64-s-1073741-0.075.pkl", 0.0, 64),
    "img64-m": ("edm2-img64-m-2147483-0.060.pkl", 0.1, 32),
    "img64-l": ("edm2-img64-l-1073741-0.040.pkl", 0.1, 32),
    "img64-xl": ("edm2-img64-xl-0671088-0.040.pkl", 0.1, 16),
}
EDM2_SID = dict(objective="sid", alpha=1.0, batch=2048, lr=5e-5, glr=5e-5, ls=1.0, lsg=100.0, ema=2.0, augment=0.0,
                g_beta1=0.0, adam_eps=1e-6, precision="bf16", resolution=64, label_dim=1000, sigma_init=2.5,
                t_max=800, tick=10, snap=50, state_every=200)
EDM2_SIDA = dict(objective="sida", lsd=100.0, lsg_gan=0.01, gan_after_kimg=200, g_after_kimg=100, psi_grad_clip=0.0)


def _edm2_row(size: str, sida: bool) -> dict:
    file, dropout, batch_gpu = EDM2_TEACHERS[size]
    latent = size.startswith("img512")
    row = dict(EDM2_SID, teacher=EDM2_URL + file, dropout=dropout, batch_gpu=batch_gpu,
               duration=100 if size == "img512-xxl" else 200,
               p_mean=-0.4 if latent else -0.8, p_std=1.0 if latent else 1.6,
               vae="stabilityai/sd-vae-ft-mse" if latent else "")
    if size == "img512-s":
        row.update(force_normalization=False, return_logvar=False)
    return dict(row, **EDM2_SIDA) if sida else row


PRESETS.update({f"{method}-edm2-{size}": _edm2_row(size, method == "sida")
                for method in ("sid", "sida") for size in EDM2_TEACHERS})
