"""Train a small EDM teacher on a dataset zip with the shared denoising loss (for CPU experiments).

    python -m full.dataset convert --source mnist5k --dest data/mnist16.zip --resolution 16
    python -m full.train_teacher --data data/mnist16.zip --outdir runs/teacher --kimg 100

The network is EDMPrecond around a DDPM++-style SongUNet (Karras et al. 2022), trained with
`full.method.losses.DenoisingLoss` (the same objective SiD uses to fit f_psi), Adam with a linear
learning-rate warm-up, and an EMA whose half-life ramps up like EDM's. The EMA weights are saved
as teacher.safetensors + teacher.json, which `full.load_network` and `full.train` accept. Running the
same command again resumes from training-state.pt.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.method.losses import DenoisingLoss
from full.options import add_options, option, overrides


@dataclass
class TeacherConfig:
    data: str = option("", "EDM dataset zip (python -m full.dataset convert ...)")
    model_channels: int = option(32, "SongUNet base channels")
    channel_mult: tuple[int, ...] = option((1, 2, 2), "channel multipliers per resolution")
    num_blocks: int = option(1, "residual blocks per resolution")
    attn_resolutions: tuple[int, ...] = option((), "resolutions with self-attention")
    dropout: float = option(0.1, "dropout probability")
    conditional: bool = option(False, "condition on the dataset's class labels")
    batch: int = option(128, "images per step")
    lr: float = option(1e-3, "Adam learning rate")
    warmup_kimg: float = option(12.8, "linear learning-rate warm-up (kimg)")
    ema_kimg: float = option(10.0, "EMA half-life (kimg), ramped up as 0.05 * images seen")
    kimg: float = option(100.0, "training length (kimg)")
    seed: int = option(0, "seed")
    threads: int = option(0, "CPU threads (0 = torch default)")


def build_teacher(config: TeacherConfig, resolution: int, channels: int, label_dim: int) -> torch.nn.Module:
    """EDMPrecond(SongUNet) with DDPM++ settings (positional embedding, standard encoder/decoder)."""
    from full.store.network_file import build_network
    return build_network("EDMPrecond", img_resolution=resolution, img_channels=channels, label_dim=label_dim,
                         model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                         decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                         model_channels=config.model_channels, channel_mult=list(config.channel_mult),
                         num_blocks=config.num_blocks, attn_resolutions=list(config.attn_resolutions),
                         dropout=config.dropout)


def train(config: TeacherConfig, outdir: str):
    """Yield (kimg, mean loss) every 1.28 kimg; save the EMA teacher and the state as it goes."""
    from full.store.atomic import atomic_write
    from full.store.network_file import save_network
    from full.store.dataset_zip import ImageZipDataset
    from full.method.ema import ema_beta, ema_update
    torch.manual_seed(config.seed)
    data = ImageZipDataset(config.data)
    images = data.all_images().float() / 127.5 - 1
    labels = torch.nn.functional.one_hot(torch.from_numpy(data.labels), data.label_dim).float() \
        if config.conditional and data.labels is not None else None
    net = build_teacher(config, data.resolution, data.channels, data.label_dim if labels is not None else 0).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    nimg, state_path = 0, os.path.join(outdir, "training-state.pt")
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"]), ema.load_state_dict(state["ema"]), opt.load_state_dict(state["opt"])
        nimg = state["nimg"]
        torch.set_rng_state(state["rng"])
    total = int(config.kimg * 1000)
    losses = []
    with tqdm(total=total, initial=nimg, unit="img", unit_scale=True, desc="teacher") as bar:
        while nimg < total:
            idx = torch.randint(len(images), (config.batch,))
            kwargs = {"class_labels": labels[idx]} if labels is not None else {}
            loss = DenoisingLoss()(net, images[idx], **kwargs)["loss"].mean()
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (nimg + 1) / max(config.warmup_kimg * 1000, 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            nimg += config.batch
            ema_update(ema, net, ema_beta(config.batch, nimg, config.ema_kimg / 1000))
            losses.append(loss.item())
            bar.update(config.batch)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if nimg % 1280 < config.batch or nimg >= total:
                save_network(ema, os.path.join(outdir, "teacher"), provenance={
                    "kind": "edm-teacher", "trained_on": os.path.basename(config.data), "kimg": nimg / 1000,
                    "config": dataclasses.asdict(config)})
                state = {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "nimg": nimg,
                         "rng": torch.get_rng_state()}
                atomic_write(state_path, lambda tmp: torch.save(state, tmp))
                yield nimg / 1000, sum(losses) / len(losses)
                losses = []


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m full.train_teacher", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--outdir", required=True, help="where teacher.safetensors/.json and log.jsonl go")
    add_options(parser, TeacherConfig)
    args = parser.parse_args(argv)
    config = TeacherConfig(**overrides(args, TeacherConfig))
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        os.makedirs(args.outdir, exist_ok=True)
        start = time.perf_counter()
        with open(os.path.join(args.outdir, "log.jsonl"), "a") as log:
            for kimg, loss in train(config, args.outdir):
                log.write(json.dumps({"kimg": kimg, "loss": loss, "seconds": time.perf_counter() - start}) + "\n")
                log.flush()
        print(f"teacher: {os.path.join(args.outdir, 'teacher.json')} ({time.perf_counter() - start:.0f} s)")
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
