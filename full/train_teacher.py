"""Train a small EDM teacher on a dataset zip with the shared denoising loss (for CPU experiments).

    python -m full.dataset convert --source mnist5k --dest data/mnist16.zip --resolution 16
    python -m full.train_teacher --data data/mnist16.zip --outdir runs/teacher --kimg 100

The network is EDMPrecond around one of EDM's architectures (--arch, `full.nets.architectures`; DDPM++ by
default, here 32 channels wide), trained with `full.method.losses.DenoisingLoss` (Karras et al. 2022; the
objective SiD uses to fit f_psi), Adam with a linear learning-rate warm-up, and an EMA whose half-life ramps up
like EDM's. --arch edm2 trains EDM2's magnitude-preserving U-Net instead (`full.nets.edm2.EDM2Precond`, forced
weight normalisation included) with EDM2's uncertainty-weighted loss (ln sigma ~ N(--p-mean, --p-std^2), default
-0.4 and 1.0 as EDM2's img512; EDM2's own Adam betas and inverse-sqrt learning-rate decay are not reproduced), on
PNG images or on EDM2's latent datasets (python -m full.dataset convert-latent); a teacher trained on latents
records EDM2's StabilityVAEEncoder (with --vae-name) and is decoded by that VAE (`full.store.latent`). Images are streamed from the zip: every step reads a random batch, so the dataset is never held in
memory. The EMA weights are saved as teacher.safetensors + teacher.json, which `full.load_network` and
`full.train` accept. Running the same command again resumes from training-state.pt, which must come from the
same architecture options.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from tqdm import tqdm

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.errors import CheckpointError, ConfigError
from full.method.losses import DenoisingLoss
from full.nets.architectures import EDM_ARCHITECTURES, build_edm, build_edm2_net
from full.store.atomic import output_folder
from full.options import (AT_LEAST_ONE, NONNEGATIVE, POSITIVE, Choices, Range, add_options, check_fields, option,
                          overrides)

STATE_FILE = "training-state.pt"
TEACHER_STEM = "teacher"
SAVE_EVERY_IMAGES = 1280
# Options that fix the network's shape: a training state resumes only under the same values.
ARCHITECTURE_FIELDS = ("arch", "model_channels", "channel_mult", "num_blocks", "attn_resolutions", "conditional")


@dataclass
class TeacherConfig:
    data: str = option("", "EDM dataset zip (python -m full.dataset convert ...)")
    arch: str = option("ddpmpp", "EDM architecture (EDM's train.py --arch), or edm2 (EDM2's MP U-Net)",
                       Choices((*EDM_ARCHITECTURES, "edm2")))
    model_channels: int = option(32, "base channels of the U-Net", AT_LEAST_ONE)
    channel_mult: tuple[int, ...] = option((1, 2, 2), "channel multipliers per resolution", AT_LEAST_ONE)
    num_blocks: int = option(1, "residual blocks per resolution", AT_LEAST_ONE)
    attn_resolutions: tuple[int, ...] = option((), "resolutions with self-attention", AT_LEAST_ONE)
    dropout: float = option(0.1, "dropout probability", Range(0, 1, high_open=True))
    conditional: bool = option(False, "condition on the dataset's class labels")
    p_mean: float | None = option(None, "ln sigma ~ N(p_mean, p_std^2); None = EDM's -1.2, or EDM2's -0.4 (img512) "
                                        "for --arch edm2", Range(-10, 10))
    p_std: float | None = option(None, "std of ln sigma; None = EDM's 1.2, or EDM2's 1.0 for --arch edm2", POSITIVE)
    vae_name: str = option("stabilityai/sd-vae-ft-mse", "latent datasets: the VAE they were encoded with, recorded "
                                                        "in the teacher's encoder")
    batch: int = option(128, "images per step", Range(1, 65536))
    lr: float = option(1e-3, "Adam learning rate", POSITIVE)
    warmup_kimg: float = option(12.8, "linear learning-rate warm-up (kimg)", NONNEGATIVE)
    ema_kimg: float = option(10.0, "EMA half-life (kimg), ramped up as 0.05 * images seen", NONNEGATIVE)
    kimg: float = option(100.0, "training length (kimg)", POSITIVE)
    seed: int = option(0, "seed", NONNEGATIVE)
    threads: int = option(0, "CPU threads (0 = torch default)", Range(0, 1024))

    def validate(self) -> "TeacherConfig":
        """Raise `ConfigError` (one line) for values that cannot work."""
        check_fields(self)
        if not self.data:
            raise ConfigError("--data is required: an EDM dataset zip (python -m full.dataset convert ...)")
        if self.seed >= 2 ** 63:
            raise ConfigError(f"--seed {self.seed} is too large; use a seed below 2^63")
        if not self.channel_mult:
            raise ConfigError("--channel-mult needs at least one multiplier, e.g. 1,2,2")
        return self

    def loss(self) -> DenoisingLoss:
        """EDM's denoising loss, or EDM2's uncertainty-weighted one (with its P_mean, P_std) for --arch edm2."""
        edm2 = self.arch == "edm2"
        p_mean = self.p_mean if self.p_mean is not None else (-0.4 if edm2 else DenoisingLoss.P_mean)
        p_std = self.p_std if self.p_std is not None else (1.0 if edm2 else DenoisingLoss.P_std)
        return DenoisingLoss(P_mean=p_mean, P_std=p_std, uses_logvar=edm2)


def build_teacher(config: TeacherConfig, resolution: int, channels: int, label_dim: int) -> torch.nn.Module:
    """EDMPrecond around `config.arch` (or EDM2Precond for edm2) with the config's width, depth, attention and
    dropout."""
    build = build_edm2_net if config.arch == "edm2" else functools.partial(build_edm, config.arch)
    return build(resolution, channels, label_dim, model_channels=config.model_channels,
                 channel_mult=list(config.channel_mult), num_blocks=config.num_blocks,
                 attn_resolutions=list(config.attn_resolutions), dropout=config.dropout)


class TeacherTraining:
    """A teacher run in `outdir`. Constructing it checks the options, the dataset and any training state to
    resume, and writes nothing; iterating trains, yielding (kimg, mean loss) every 1.28 kimg after saving the
    EMA teacher and the training state."""

    def __init__(self, config: TeacherConfig, outdir: str):
        from full.store.dataset_zip import DatasetError, ImageZipDataset
        from full.store.latent import PIXEL_RECORD, encoder_for, stability_vae_record
        self.config, self.outdir = config.validate(), outdir
        self.data = ImageZipDataset(config.data, what="--data")
        if self.data.kind != "png" and config.arch != "edm2":
            raise DatasetError(f"--data {config.data} holds {self.data.format.describe()} arrays (latents); an EDM "
                               f"teacher trains on PNG images: use --arch edm2 for a latent teacher")
        latent = self.data.kind == "npy"
        if latent and self.data.channels % 2:
            raise DatasetError(f"--data {config.data} holds {self.data.channels}-channel arrays; EDM2's latent "
                               f"datasets hold the VAE's mean and std, an even number of channels")
        record = stability_vae_record(config.vae_name) if latent else PIXEL_RECORD if config.arch == "edm2" else None
        if latent and len(record["scale"]) != self.data.channels // 2:
            raise DatasetError(f"--data {config.data} holds {self.data.channels // 2}-channel latents; EDM2's "
                               f"latent encoder scales {len(record['scale'])} channels (stabilityai/sd-vae-ft-mse)")
        self.encoder = encoder_for(record)
        if config.conditional and self.data.labels is None:
            raise ConfigError(f"--conditional true needs class labels, but --data {config.data} has none; drop "
                              f"--conditional or use a labelled dataset")
        self.label_dim = self.data.label_dim if config.conditional else 0
        torch.manual_seed(config.seed)
        channels = self.data.channels // 2 if latent else self.data.channels
        self.net = build_teacher(config, self.data.resolution, channels, self.label_dim).train()
        self.net.encoder = record  # EDM2: how dataset items map to model space (None = EDM's pixels)
        self.loss = config.loss()
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.nimg = 0
        self.state_path = os.path.join(outdir, STATE_FILE)
        if os.path.exists(self.state_path):
            self._resume(read_state(self.state_path))

    @property
    def total(self) -> int:
        return int(self.config.kimg * 1000)

    @property
    def teacher_stem(self) -> str:
        return os.path.join(self.outdir, TEACHER_STEM)

    def _resume(self, state: dict) -> None:
        where = self.state_path
        recorded = state.get("config", {}) if isinstance(state.get("config"), dict) else {}
        for name in ARCHITECTURE_FIELDS:
            if name in recorded and _plain(recorded[name]) != _plain(getattr(self.config, name)):
                flag = f"--{name.replace('_', '-')}"
                raise CheckpointError(f"{where} was written with {flag} {_shown(recorded[name])}, not "
                                      f"{_shown(getattr(self.config, name))}; resume with the same architecture "
                                      f"options, or use a new --outdir")
        for key in ("net", "ema"):
            _check_weights(state[key], self.net.state_dict(), f"{where} ({key})")
        _check_adam(state["opt"], self.opt, where)
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.nimg = state["nimg"]
        torch.set_rng_state(state["rng"])

    def _save(self) -> None:
        from full.store.atomic import atomic_write
        from full.store.network_file import save_network
        save_network(self.ema, self.teacher_stem, provenance={
            "kind": "edm-teacher", "trained_on": os.path.basename(self.config.data), "kimg": self.nimg / 1000,
            "config": dataclasses.asdict(self.config)})
        state = {"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                 "nimg": self.nimg, "rng": torch.get_rng_state(), "config": dataclasses.asdict(self.config)}
        atomic_write(self.state_path, lambda tmp: torch.save(state, tmp))

    def __iter__(self) -> Iterator[tuple[float, float]]:
        """Train to --kimg: each step draws `batch` random images (with replacement) from the stream."""
        from full.method.ema import ema_beta, ema_update
        config, total = self.config, self.total
        if self.nimg >= total and not os.path.exists(self.teacher_stem + ".json"):
            self._save()
        losses = []
        with tqdm(total=total, initial=min(self.nimg, total), unit="img", unit_scale=True, desc="teacher") as bar:
            while self.nimg < total:
                idx = torch.randint(len(self.data), (config.batch,))
                raw, labels = self.data.batch(idx)
                kwargs = {"class_labels": labels} if self.label_dim else {}
                loss = self.loss(self.net, self.encoder.encode_dataset_batch(raw), **kwargs)["loss"].mean()
                for group in self.opt.param_groups:
                    group["lr"] = config.lr * min(1.0, (self.nimg + 1) / max(config.warmup_kimg * 1000, 1))
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.nimg += config.batch
                ema_update(self.ema, self.net, ema_beta(config.batch, self.nimg, config.ema_kimg / 1000))
                losses.append(loss.item())
                bar.update(config.batch)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if self.nimg % SAVE_EVERY_IMAGES < config.batch or self.nimg >= total:
                    self._save()
                    yield self.nimg / 1000, sum(losses) / len(losses)
                    losses = []


# ---------------------------------------------------------------------------------------------- training state


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def read_state(path: str) -> dict:
    """A training state of ours, loaded safely (tensors and plain containers only) and checked for its keys."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...) for foreign files
        raise CheckpointError(f"{path} is not a readable training state ({type(error).__name__}); delete it to "
                              f"start afresh, or use a new --outdir") from None
    needed = {"net", "ema", "opt", "nimg", "rng"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise CheckpointError(f"{path} is not a training state of full.train_teacher (it lacks "
                              f"{', '.join(sorted(needed - set(state) if isinstance(state, dict) else needed))}); "
                              f"delete it, or use a new --outdir")
    nimg, rng = state["nimg"], state["rng"]
    if isinstance(nimg, bool) or not isinstance(nimg, int) or nimg < 0:
        raise CheckpointError(f"{path}: its image count {nimg!r} is not a non-negative integer")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise CheckpointError(f"{path}: its random-number state is not torch's CPU generator state")
    return state


def _check_weights(given, expected: dict, where: str) -> None:
    if not isinstance(given, dict):
        raise CheckpointError(f"{where} holds no weights; delete it, or use a new --outdir")
    hint = "it comes from other architecture options or another dataset; resume with the same ones or use a new --outdir"
    for key, value in expected.items():
        if key not in given:
            raise CheckpointError(f"{where} lacks {key}: {hint}")
        if not isinstance(given[key], torch.Tensor) or given[key].shape != value.shape:
            shape = list(given[key].shape) if isinstance(given[key], torch.Tensor) else type(given[key]).__name__
            raise CheckpointError(f"{where}: {key} is {shape}, expected {list(value.shape)}: {hint}")
    extra = sorted(set(given) - set(expected))
    if extra:
        raise CheckpointError(f"{where} has an unexpected entry {extra[0]}: {hint}")


def _check_adam(given, opt: torch.optim.Adam, where: str) -> None:
    """The saved Adam state must have one group over our parameters, with moments of their shapes."""
    params = opt.param_groups[0]["params"]
    groups = given.get("param_groups") if isinstance(given, dict) else None
    moments = given.get("state") if isinstance(given, dict) else None
    ok = isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict) \
        and {"params", "lr", "betas", "eps", "weight_decay"} <= set(groups[0]) and isinstance(groups[0]["params"], list) \
        and len(groups[0]["params"]) == len(params) and isinstance(moments, dict)
    if ok:
        ids = groups[0]["params"]
        for key, entry in moments.items():
            if key not in ids or not isinstance(entry, dict):
                ok = False
                break
            shape = params[ids.index(key)].shape
            if any(not isinstance(entry.get(m), torch.Tensor) or entry[m].shape != shape
                   for m in ("exp_avg", "exp_avg_sq")) or not isinstance(entry.get("step"), torch.Tensor):
                ok = False
                break
    if not ok:
        raise CheckpointError(f"{where}: its optimiser state does not match this network's parameters; delete it, "
                              f"or use a new --outdir")


# ---------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m full.train_teacher", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--outdir", required=True, help="where teacher.safetensors/.json and log.jsonl go")
    add_options(parser, TeacherConfig)
    args = parser.parse_args(argv)
    try:
        config = TeacherConfig(**overrides(args, TeacherConfig)).validate()
        if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
            raise ConfigError(f"--outdir {args.outdir} is a file; give a directory")
        if config.threads:
            torch.set_num_threads(config.threads)
        training = TeacherTraining(config, args.outdir)  # everything checked; nothing written yet
        output_folder(args.outdir, f"--outdir {args.outdir}")
        if training.nimg >= training.total:
            print(f"{training.state_path} is already at {training.nimg / 1000:g} kimg (--kimg {config.kimg:g}); "
                  f"nothing to train")
        start = time.perf_counter()
        with open(os.path.join(args.outdir, "log.jsonl"), "a") as log:
            for kimg, loss in training:
                log.write(json.dumps({"kimg": kimg, "loss": loss, "seconds": time.perf_counter() - start}) + "\n")
                log.flush()
        print(f"teacher: {training.teacher_stem}.json ({time.perf_counter() - start:.0f} s)")
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
