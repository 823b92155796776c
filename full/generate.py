"""Generate images with a one-step SiD generator, or with a teacher through the EDM sampler.

    python -m full.generate --network SNAPSHOT --seeds 0-49999 --batch 256 --outdir DIR [--npz] [--class N]
    python -m full.generate --teacher PATH --steps 18 --seeds 0-63 --outdir DIR

Every image is a function of its seed alone (EDM's convention, see `full.eval.sampling`), so the output
does not depend on the batch size or on how torchrun shards the seeds over ranks.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from full import distributed
from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.eval.images import save_png, to_uint8
from full.eval.sampling import sample_images


def parse_seeds(text: str) -> list[int]:
    """'0-49999' or '1,5,10-12' -> list of ints."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ValueError(f"cannot read seeds {text!r}; write them like 0-49999 or 1,5,10-12") from None
    return seeds


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m full.generate", description=__doc__.split("\n\n")[0],
                       epilog="Shard over GPUs with: torchrun --nproc_per_node N -m full.generate ...")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--network", help="one-step generator (SiD snapshot: .safetensors/.json or .pkl)")
    source.add_argument("--teacher", help="EDM teacher (.pkl or .safetensors/.json), sampled with --steps Heun steps")
    p.add_argument("--steps", type=int, default=18, help="Heun steps for --teacher (18 = 35 NFE; 40 = 79 NFE)")
    p.add_argument("--seeds", default="0-63", help="seeds, e.g. 0-49999 (default: 0-63)")
    p.add_argument("--batch", type=int, default=64, help="images per forward pass per rank (default: 64)")
    p.add_argument("--outdir", required=True, help="where PNGs (in {seed//1000*1000:06d}/{seed:06d}.png) go")
    p.add_argument("--npz", action="store_true", help="also write images.npz (uint8 NHWC 'images' and 'seeds')")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="fix the class label (conditional nets)")
    p.add_argument("--sigma-init", type=float, default=None, help="override the generator's sigma_init")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from full.store.network_file import load_network
        ranks = distributed.init(args.device)
        seeds = parse_seeds(args.seeds)
        net = load_network(args.network or args.teacher, device=ranks.device)
        if args.class_idx is not None and not 0 <= args.class_idx < max(net.label_dim, 1):
            raise ValueError(f"--class {args.class_idx} is out of range for a network with {net.label_dim} labels")
        os.makedirs(args.outdir, exist_ok=True)
        mine = seeds[ranks.rank::ranks.world]
        images, start = [], time.perf_counter()
        for i in tqdm(range(0, len(mine), args.batch), disable=not ranks.is_main, unit="batch"):
            batch_seeds = mine[i:i + args.batch]
            pixels = to_uint8(sample_images(net, batch_seeds, teacher_steps=args.steps if args.teacher else None,
                                            class_idx=args.class_idx, sigma_init=args.sigma_init))
            for seed, image in zip(batch_seeds, pixels):
                folder = os.path.join(args.outdir, f"{seed // 1000 * 1000:06d}")
                os.makedirs(folder, exist_ok=True)
                save_png(image, os.path.join(folder, f"{seed:06d}.png"))
            if args.npz:
                images.append(pixels)
        if args.npz:
            shard = os.path.join(args.outdir, f"images-rank{ranks.rank}.npz")
            np.savez(shard, images=np.concatenate(images) if images else np.zeros((0,)), seeds=np.array(mine))
            distributed.barrier(ranks)
            if ranks.is_main:
                _merge_shards(args.outdir, ranks.world)
        if ranks.is_main:
            ms = 1000 * (time.perf_counter() - start) / max(len(mine), 1)
            print(f"wrote {len(seeds)} images to {args.outdir} ({ms:.1f} ms/image on rank 0)")
        distributed.shutdown()
        return 0
    except USER_ERRORS as error:
        return report_error(error)


def _merge_shards(outdir: str, world: int) -> None:
    """Join per-rank npz shards into images.npz ordered by seed."""
    parts = [np.load(os.path.join(outdir, f"images-rank{r}.npz")) for r in range(world)]
    seeds = np.concatenate([p["seeds"] for p in parts])
    images = np.concatenate([p["images"] for p in parts if p["images"].ndim == 4])
    order = np.argsort(seeds, kind="stable")
    np.savez(os.path.join(outdir, "images.npz"), images=images[order], seeds=seeds[order])
    for r in range(world):
        os.unlink(os.path.join(outdir, f"images-rank{r}.npz"))


if __name__ == "__main__":
    sys.exit(main())
