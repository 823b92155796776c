"""FID, Inception Score and precision/recall of generators, teachers or image sets (EDM's FID protocol).

    python -m full.metrics ref --data cifar10-32x32.zip --dest cifar10-ref.npz --detector DETECTOR
    python -m full.metrics calc --network SNAPSHOT --ref REF.npz --detector DETECTOR --num 50000 --trials 10
    python -m full.metrics calc --teacher edm.pkl --steps 18 --ref REF.npz --detector DETECTOR
    python -m full.metrics calc --images DIR_or_NPZ --ref REF.npz --detector DETECTOR --json

DETECTOR is the StyleGAN/EDM Inception TorchScript (see INCEPTION_URL), or one of our feature nets
(NAME.safetensors + NAME.json, e.g. assets/mnist16-classifier for FID-MNIST). Reference statistics
are EDM's .npz files (keys mu, sigma), e.g. https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz.
Trial t of --trials T uses seeds seed_start + t*num ... seed_start + (t+1)*num - 1; results are
reported as mean ± std over trials (sample std), as the SiD paper reports 10 trials of 50k images.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.eval.detectors import INCEPTION_URL, FeatureNet, MetricsError, load_detector
from full.eval.fid import frechet_distance, inception_score, load_stats, precision_recall, save_stats, summarize
from full.eval.measure import dataset_batches, generator_batches, load_images, measure


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m full.metrics", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ref", help="write reference statistics (mu, sigma) of a dataset zip")
    p.add_argument("--data", required=True, help="EDM dataset zip")
    p.add_argument("--dest", required=True, help="output .npz")
    p.add_argument("--detector", default=INCEPTION_URL, help="feature network (default: the Inception TorchScript)")
    p.add_argument("--batch", type=int, default=250, help="images per detector call (default: 250)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p = sub.add_parser("calc", help="FID (and IS, precision/recall) of a generator, teacher or image set")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--network", help="one-step generator snapshot (.safetensors/.json or .pkl)")
    source.add_argument("--teacher", help="EDM teacher, sampled with --steps Heun steps")
    source.add_argument("--images", help="folder of PNGs or .npz with NHWC uint8 'images'")
    p.add_argument("--steps", type=int, default=18, help="Heun steps for --teacher (default: 18 = 35 NFE)")
    p.add_argument("--sigma-init", type=float, default=None, help="override the generator's sigma_init")
    p.add_argument("--ref", required=True, help="reference statistics .npz (path or URL)")
    p.add_argument("--detector", default=INCEPTION_URL, help="feature network (default: the Inception TorchScript)")
    p.add_argument("--num", type=int, default=50000, help="images per trial (default: 50000)")
    p.add_argument("--trials", type=int, default=1, help="disjoint seed ranges (or image subsets) (default: 1)")
    p.add_argument("--batch", type=int, default=250, help="images per generator/detector call (default: 250)")
    p.add_argument("--seed-start", type=int, default=0, help="first seed of trial 0 (default: 0)")
    p.add_argument("--pr-data", help="dataset zip: also report precision/recall (k=3) against its features")
    p.add_argument("--no-is", action="store_true", help="skip the Inception Score (saves one detector pass)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    return parser


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def _check_dims(detector: FeatureNet, shape: tuple[int, ...], dim: int, ref: str) -> None:
    got = detector.features(torch.zeros((1, *shape), dtype=torch.uint8)).shape[1]
    if got != dim:
        raise MetricsError(f"{ref} holds {dim}-d statistics but {detector.name} gives {got}-d features; "
                           f"compute the reference with the same --detector")


def run_ref(args) -> dict:
    from full.store.dataset_zip import ImageZipDataset
    data = ImageZipDataset(args.data)
    detector = load_detector(args.detector, _device(args.device))
    stats = measure(detector, dataset_batches(data, args.batch), len(data), desc="reference").stats
    save_stats(args.dest, *stats.mean_cov())
    return {"dest": args.dest, "images": stats.n, "dim": int(len(stats.mu)), "detector": args.detector}


def _trial_sources(args, device: torch.device) -> tuple[tuple[int, ...], list[list[int]] | None, list]:
    """(image shape, seeds per trial or None, uint8 NCHW batch iterables per trial) of the calc source."""
    if args.images:
        images = load_images(args.images)
        if len(images) < args.num * args.trials:
            raise MetricsError(f"{args.images} holds {len(images)} images; {args.trials} trial(s) of --num "
                               f"{args.num} need {args.num * args.trials}")
        order = torch.from_numpy(np.random.default_rng(0).permutation(len(images)))  # EDM: random subset, seed 0
        return tuple(images.shape[1:]), None, [images[order[t * args.num:(t + 1) * args.num]].split(args.batch)
                                               for t in range(args.trials)]
    from full.store.network_file import load_network
    net = load_network(args.network or args.teacher, device=device)
    seeds = [list(range(args.seed_start + t * args.num, args.seed_start + (t + 1) * args.num))
             for t in range(args.trials)]
    sources = [generator_batches(net, s, args.batch, teacher_steps=args.steps if args.teacher else None,
                                 sigma_init=args.sigma_init) for s in seeds]
    return (net.img_channels, net.img_resolution, net.img_resolution), seeds, sources


def run_calc(args) -> dict:
    from full.store.dataset_zip import ImageZipDataset
    if min(args.num, args.trials, args.batch) <= 0 or args.num < 2:
        raise MetricsError("--num must be at least 2, and --trials and --batch positive")
    mu_ref, sigma_ref = load_stats(args.ref)
    device = _device(args.device)
    detector = load_detector(args.detector, device)
    want_probs = detector.has_probs and not args.no_is
    if want_probs and args.num < 10:
        raise MetricsError("the Inception Score needs --num of at least 10 (its 10 splits); or pass --no-is")
    real = ImageZipDataset(args.pr_data) if args.pr_data else None
    shape, seeds, sources = _trial_sources(args, device)
    _check_dims(detector, shape, len(mu_ref), args.ref)
    real_features = None if real is None else measure(
        detector, dataset_batches(real, args.batch), len(real), keep_features=True, desc="real features").features
    results: dict[str, list] = {"fid": [], "is": [], "is_split_std": [], "precision": [], "recall": []}
    classes = []
    for t, batches in enumerate(sources):
        m = measure(detector, batches, args.num, probs=want_probs, keep_features=real is not None,
                    desc=f"trial {t + 1}/{args.trials}")
        results["fid"].append(frechet_distance(*m.stats.mean_cov(), mu_ref, sigma_ref))
        if want_probs:
            score, split_std = inception_score(m.probs)
            results["is"].append(score)
            results["is_split_std"].append(split_std)
            classes.append(np.bincount(m.probs.argmax(axis=1), minlength=m.probs.shape[1]))
        if real is not None:
            precision, recall = precision_recall(real_features, m.features)
            results["precision"].append(precision)
            results["recall"].append(recall)
    report = {"source": args.network or args.teacher or args.images, "detector": args.detector, "ref": args.ref,
              "num": args.num, "trials": args.trials,
              "seeds": None if seeds is None else [[s[0], s[-1]] for s in seeds]}
    report.update({k: summarize(v) for k, v in results.items() if v and k != "is_split_std"})
    if want_probs:
        report["is"]["split_std"] = results["is_split_std"]
        report["class_histogram"] = [int(c) for c in np.sum(classes, axis=0)]
    return report


def _print_report(report: dict) -> None:
    trials = report["trials"]
    print(f"{report['source']}: {trials} trial(s) of {report['num']} images"
          + (f", seeds {report['seeds'][0][0]}-{report['seeds'][-1][1]}" if report["seeds"] else ""))
    for key in ("fid", "is", "precision", "recall"):
        if key not in report:
            continue
        line = f"{key:<10} {report[key]['mean']:.4f}"
        if trials > 1:
            line += f" ± {report[key]['std']:.4f} (std over trials)"
        elif key == "is":
            line += f" ± {report[key]['split_std'][0]:.4f} (std over 10 splits)"
        print(line)
    if 0 < len(report.get("class_histogram", ())) <= 20:  # predicted classes of the samples, when readable
        print(f"{'classes':<10} {report['class_histogram']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ref":
            report = run_ref(args)
            print(json.dumps(report))
        else:
            report = run_calc(args)
            if args.json:
                print(json.dumps(report))
            else:
                _print_report(report)
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
