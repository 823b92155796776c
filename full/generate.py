"""Generate images with a one-step SiD generator, or with a teacher through EDM's sampler.

    python -m full.generate --network SNAPSHOT --seeds 0-49999 --batch 256 --outdir DIR [--npz] [--class N]
    python -m full.generate --teacher PATH --seeds 0-63 --outdir DIR                      # 18 Heun steps
    python -m full.generate --teacher PATH --sampler imagenet64 --seeds 0-63 --outdir DIR # EDM's stochastic one
    python -m full.generate --teacher PATH --sampler 64x64 --steps 20 --seeds 0-63 --outdir DIR

A latent-space network (EDM2 img512, or a generator distilled from one) is decoded to pixels by its VAE,
given with --vae (a diffusers AutoencoderKL folder or hub id, e.g. stabilityai/sd-vae-ft-mse).

Every image is a function of its seed alone (EDM's convention, see `full.eval.sampling`; a stochastic
sampler's noise comes from the seed too), so the output does not depend on the batch size or on how torchrun
shards the seeds over ranks. Seeds are ranges, never listed: each rank streams its share in batches.
Samplers (EDM's presets): 32x32 = 18 deterministic steps (the default), 64x64 = 40 steps, imagenet64 = 256
stochastic steps (S_churn 40, S_min 0.05, S_max 50, S_noise 1.003); --steps overrides the step count.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import zipfile

import numpy as np
import torch
from tqdm import tqdm

from full import distributed
from full.options import library, nonnegative_int, positive_float, positive_int
from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.errors import ConfigError
from full.eval.images import save_png
from full.eval.sampler import SAMPLER_PRESETS, SamplerConfig, sampler_config
from full.eval.sampling import Seeds, parse_seeds, sample_pixels
from full.store.atomic import atomic_write, output_folder


def png_path(outdir: str, seed: int) -> str:
    """EDM's layout: ``{seed // 1000 * 1000:06d}/{seed:06d}.png``."""
    return os.path.join(outdir, f"{seed // 1000 * 1000:06d}", f"{seed:06d}.png")


def check_class(net: torch.nn.Module, class_idx: int | None) -> None:
    if class_idx is None:
        return
    if net.label_dim == 0:
        raise ConfigError(f"--class {class_idx}: the network is unconditional (no class labels); drop --class")
    if not 0 <= class_idx < net.label_dim:
        raise ConfigError(f"--class {class_idx} is out of range; the network has classes 0 to {net.label_dim - 1}")


def generate(net: torch.nn.Module, seeds: Seeds, outdir: str, *, batch: int = 64, sampler: SamplerConfig | None = None,
             class_idx: int | None = None, sigma_init: float | None = None, npz: bool = False,
             ranks: distributed.Ranks | None = None, encoder=None) -> int:
    """Write one PNG per seed of this rank's share of `seeds` into `outdir` (which must exist), sampling `net`
    as a one-step generator, or as a teacher through `sampler` when given, and decoding with `encoder`
    (`full.store.latent`; default: the network's own, which for a latent network must carry its VAE, see
    `full.store.latent.open_encoder`). With `npz`, rank 0 also writes ``images.npz`` (uint8 NHWC ``images`` and
    int64 ``seeds``, in seed order) once every rank is done; images are streamed to disk, never held together.
    Returns the number of PNGs this rank wrote."""
    from full.store.latent import encoder_for
    encoder = encoder if encoder is not None else encoder_for(net)
    ranks = ranks or distributed.Ranks(0, 1, next(net.parameters()).device)
    mine = seeds.shard(ranks.rank, ranks.world)
    channels, height, width = encoder.pixel_shape(net.img_channels, net.img_resolution)
    shape = (height, width, channels)
    shard = _shard_path(outdir, ranks.rank)
    written = 0
    try:
        with open(shard, "wb") if npz else contextlib.nullcontext() as shard_file:
            if npz:
                _write_npy_header(shard_file, (len(mine), *shape), np.uint8)
            for batch_seeds in tqdm(mine.batches(batch), total=-(-len(mine) // batch), disable=not ranks.is_main,
                                    unit="batch"):
                pixels = sample_pixels(net, batch_seeds, encoder=encoder, sampler=sampler, class_idx=class_idx,
                                       sigma_init=sigma_init).permute(0, 2, 3, 1).cpu().numpy()
                for seed, image in zip(batch_seeds, pixels):
                    os.makedirs(os.path.dirname(png_path(outdir, seed)), exist_ok=True)
                    save_png(image, png_path(outdir, seed))
                written += len(batch_seeds)
                if npz:
                    shard_file.write(np.ascontiguousarray(pixels).tobytes())
    except BaseException:
        if npz and os.path.exists(shard):
            os.unlink(shard)
        raise
    if npz:
        distributed.barrier(ranks)
        if ranks.is_main:
            _merge_shards(outdir, seeds, ranks.world, shape)
    return written


def _shard_path(outdir: str, rank: int) -> str:
    return os.path.join(outdir, f".images-rank{rank}.npy")


def _write_npy_header(f, shape: tuple[int, ...], dtype) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": tuple(shape)})


def _merge_shards(outdir: str, seeds: Seeds, world: int, shape: tuple[int, int, int], chunk: int = 4096) -> None:
    """Concatenate the ranks' shards (contiguous shares of the ascending seeds) into images.npz, streamed."""
    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("images.npy", "w", force_zip64=True) as f:
                _write_npy_header(f, (len(seeds), *shape), np.uint8)
                for rank in range(world):
                    if len(seeds.shard(rank, world)):
                        part = np.load(_shard_path(outdir, rank), mmap_mode="r")
                        for start in range(0, len(part), chunk):
                            f.write(np.ascontiguousarray(part[start:start + chunk]).tobytes())
            with zf.open("seeds.npy", "w", force_zip64=True) as f:
                _write_npy_header(f, (len(seeds),), np.int64)
                for batch_seeds in seeds.batches(1 << 20):
                    f.write(np.asarray(batch_seeds, dtype=np.int64).tobytes())
    atomic_write(os.path.join(outdir, "images.npz"), write)
    for rank in range(world):
        os.unlink(_shard_path(outdir, rank))


# ---------------------------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m full.generate", description=__doc__.split("\n\n")[0],
                       epilog=__doc__.split("\n\n", 1)[1] + "\n\nShard over GPUs with: torchrun --nproc_per_node N "
                                                            "-m full.generate ...")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--network", help="one-step generator (SiD snapshot: .safetensors/.json or .pkl)")
    source.add_argument("--teacher", help="EDM teacher (.pkl or .safetensors/.json), sampled with --sampler")
    p.add_argument("--sampler", choices=tuple(SAMPLER_PRESETS), default=None,
                   help="EDM sampler preset for --teacher: 32x32 (18 steps, default), 64x64 (40), imagenet64 "
                        "(256 stochastic steps)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="Heun steps for --teacher, overriding the preset's (18 = 35 NFE; 40 = 79 NFE)")
    p.add_argument("--seeds", type=library(parse_seeds), default=parse_seeds("0-63"),
                   help="seeds, e.g. 0-49999 or 1,5,10-12 (default: 0-63)")
    p.add_argument("--batch", type=positive_int, default=64, help="images per forward pass per rank (default: 64)")
    p.add_argument("--outdir", required=True, help="where PNGs (in {seed//1000*1000:06d}/{seed:06d}.png) go")
    p.add_argument("--npz", action="store_true", help="also write images.npz (uint8 NHWC 'images' and 'seeds')")
    p.add_argument("--class", dest="class_idx", type=nonnegative_int, default=None,
                   help="fix the class label (conditional nets)")
    p.add_argument("--sigma-init", type=positive_float, default=None,
                   help="override the generator's sigma_init (--network)")
    p.add_argument("--vae", default=None, help="latent-space networks (EDM2 img512): their VAE, a diffusers "
                                                "AutoencoderKL folder or hub id (stabilityai/sd-vae-ft-mse)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.network and (args.sampler or args.steps):
            raise ConfigError("--sampler and --steps choose how a --teacher is sampled; a --network generator "
                              "takes one step (use --teacher to sample a teacher)")
        if args.teacher and args.sigma_init is not None:
            raise ConfigError("--sigma-init sets a --network generator's noise level; a --teacher starts from "
                              "the sampler's sigma_max")
        sampler = sampler_config(args.sampler, args.steps) if args.teacher else None
        ranks = distributed.init(args.device)
        from full.store.network_file import load_network
        net = load_network(args.network or args.teacher, device=ranks.device,
                           what="--network" if args.network else "--teacher")
        check_class(net, args.class_idx)
        from full.store.latent import open_encoder
        encoder = open_encoder(net, args.vae, ranks.device)
        output_folder(args.outdir, f"--outdir {args.outdir}")
        start = time.perf_counter()
        written = generate(net, args.seeds, args.outdir, batch=args.batch, sampler=sampler,
                           class_idx=args.class_idx, sigma_init=args.sigma_init, npz=args.npz, ranks=ranks,
                           encoder=encoder)
        if ranks.is_main:
            ms = 1000 * (time.perf_counter() - start) / max(written, 1)
            total = len(args.seeds)
            print(f"wrote {total} images to {args.outdir} ({written} on rank 0, {ms:.1f} ms/image"
                  + (f", {sampler.nfe} NFE" if sampler else "") + ")")
        distributed.shutdown()
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
