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
import functools
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import scipy.linalg
import scipy.special
import torch
from PIL import Image
from tqdm import tqdm

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.download import fetch, is_url
from full.errors import SidError

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


class MetricsError(SidError, ValueError):
    """A detector, statistics file or image source that cannot be used."""


# ------------------------------------------------------------------------------------- feature networks


class FeatureNet:
    """A feature network with the StyleGAN/EDM Inception detector interface, on one device.

    The wrapped `net` takes uint8 NCHW images (0..255): ``net(x, return_features=True)`` gives [N, D] features
    and, when it accepts ``no_output_bias``, ``net(x, no_output_bias=True)`` gives [N, K] class probabilities
    (softmax without the output bias, as in the original Inception Score code). Gray images are repeated
    to 3 channels for 3-channel nets.
    """

    def __init__(self, net, channels: int, has_probs: bool, name: str, device: torch.device):
        self.net, self.channels, self.has_probs, self.name, self.device = net, channels, has_probs, name, device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise MetricsError(f"detectors take uint8 NCHW images, got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1 and self.channels == 3:
            images = images.repeat(1, 3, 1, 1)
        if images.shape[1] != self.channels:
            raise MetricsError(f"{self.name} takes {self.channels}-channel images, got {images.shape[1]} channels")
        return images.to(self.device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare(images), return_features=True).double().cpu()

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare(images), no_output_bias=True).double().cpu()


def load_detector(location: str, device: str | torch.device = "cpu") -> FeatureNet:
    """A TorchScript Inception-style detector (.pt, path or URL), or our NAME.safetensors + NAME.json feature net."""
    device = torch.device(device)
    stem = location.removesuffix(".safetensors").removesuffix(".json")
    if location.endswith(".pkl"):
        raise MetricsError(f"{location} is a pickle, which would run code to load; use the TorchScript form of the "
                           f"Inception detector instead: {INCEPTION_URL}")
    if location.endswith((".json", ".safetensors")) or not is_url(location) and fetch(stem + ".json").is_file():
        from full.mnist_classifier import load_classifier
        net = load_classifier(fetch(stem + ".json"), fetch(stem + ".safetensors")).to(device)
        return FeatureNet(net, net.channels, True, os.path.basename(stem), device)
    path = fetch(location)
    if not path.is_file():
        raise MetricsError(f"detector not found: {location}; pass the Inception TorchScript ({INCEPTION_URL}) "
                           f"or a feature net NAME.safetensors + NAME.json")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the published detector is TorchScript
            net = torch.jit.load(str(path), map_location=device).eval()
        arguments = {a.name for a in net.forward.schema.arguments}
    except (RuntimeError, ValueError, AttributeError) as error:
        raise MetricsError(f"{location} is not a TorchScript detector ({str(error).splitlines()[0]})") from None
    if "return_features" not in arguments:
        raise MetricsError(f"{location} has no return_features argument; it is not an Inception-style detector")
    return FeatureNet(net, 3, "no_output_bias" in arguments, path.name, device)


# ------------------------------------------------------------------------------------------ statistics


class FeatureStats:
    """Running mean and unbiased (N-1) covariance of features in float64, merged batch by batch
    with the pairwise update of Chan, Golub and LeVeque (1979)."""

    def __init__(self):
        self.n, self.mu, self.m2 = 0, None, None

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64)
        if len(x) == 0:
            return
        mu_b = x.mean(axis=0)
        m2_b = (x - mu_b).T @ (x - mu_b)
        if self.n == 0:
            self.n, self.mu, self.m2 = len(x), mu_b, m2_b
            return
        n = self.n + len(x)
        delta = mu_b - self.mu
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * len(x) / n)
        self.mu = self.mu + delta * (len(x) / n)
        self.n = n

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise MetricsError(f"statistics need at least 2 images, got {self.n}")
        return self.mu, self.m2 / (self.n - 1)


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write EDM's reference format: an .npz with float64 `mu` [D] and `sigma` [D, D], atomically."""
    from full.atomic import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
    atomic_write(os.fspath(path), write)


def load_stats(location: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an EDM-style .npz (path or URL), checked for keys, shapes and finiteness."""
    path = fetch(os.fspath(location))
    if not path.is_file():
        raise MetricsError(f"reference statistics not found: {location}; compute them with python -m full.metrics "
                           f"ref, or download EDM's from https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/")
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except KeyError:
        raise MetricsError(f"{location} lacks the keys mu and sigma of a reference statistics file") from None
    except (OSError, ValueError, EOFError) as error:
        raise MetricsError(f"{location} is not a readable .npz file ({error})") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise MetricsError(f"{location}: mu {mu.shape} and sigma {sigma.shape} should be [D] and [D, D]")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricsError(f"{location} holds non-finite statistics")
    return mu, sigma


# --------------------------------------------------------------------------------------------- metrics


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2), the FID of Heusel et al. (2017):
    ||mu1 - mu2||^2 + Tr(s1 + s2 - 2 sqrtm(s1 s2)), with scipy's sqrtm and its real part (as EDM).

    With fewer images than feature dimensions s1 s2 is singular; its square root is still defined, and
    EDM ignores scipy's warning about it (``disp=False``), so we silence that warning too."""
    if np.shape(mu1) != np.shape(mu2) or np.shape(s1) != np.shape(s2):
        raise MetricsError(f"statistics of different sizes: {np.shape(mu1)} vs {np.shape(mu2)}; compute both "
                           f"with the same detector")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(np.dot(s1, s2))
    return float(np.real(np.square(mu1 - mu2).sum() + np.trace(s1 + s2 - 2 * root)))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score of Salimans et al. (2016): exp(E_x KL(p(y|x) || p(y))), with p(y) the mean prediction
    of each of `splits` consecutive parts; returns the mean and (population) std over the parts."""
    probs = np.asarray(probs, np.float64)
    if len(probs) < splits:
        raise MetricsError(f"the Inception Score needs at least {splits} images, got {len(probs)}")
    scores = []
    for i in range(splits):
        part = probs[i * len(probs) // splits:(i + 1) * len(probs) // splits]
        kl = scipy.special.rel_entr(part, part.mean(axis=0, keepdims=True)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _kth_distances(points: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour among `points` (itself excluded)."""
    return torch.cat([torch.cdist(rows, points).kthvalue(k + 1, dim=1).values for rows in points.split(batch)])


def _covered(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, batch: int) -> torch.Tensor:
    """Fraction of probes inside at least one ball B(manifold_j, radii_j)."""
    inside = [(torch.cdist(rows, manifold) <= radii).any(dim=1) for rows in probes.split(batch)]
    return torch.cat(inside).double().mean()


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3,
                     batch: int = 1000) -> tuple[float, float]:
    """Improved precision and recall of Kynkäänniemi et al. (2019): each set's manifold is the union of balls
    reaching every feature's k-th nearest neighbour; precision is the fraction of fake features inside the
    real manifold, recall the fraction of real features inside the fake one. Distances in row batches."""
    real, fake = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)
    if min(len(real), len(fake)) <= k:
        raise MetricsError(f"precision/recall with k={k} needs more than {k} features in each set")
    precision = _covered(fake, real, _kth_distances(real, k, batch), batch)
    recall = _covered(real, fake, _kth_distances(fake, k, batch), batch)
    return float(precision), float(recall)


# ---------------------------------------------------------------------------------------- image sources


def generator_batches(net: torch.nn.Module, seeds: list[int], batch: int, *, teacher_steps: int | None = None,
                      sigma_init: float | None = None) -> Iterator[torch.Tensor]:
    """uint8 NCHW images of a one-step generator (or a teacher with `teacher_steps` Heun steps) for `seeds`."""
    from full.generate import sample_images
    from full.images import to_uint8
    for i in range(0, len(seeds), batch):
        x = sample_images(net, seeds[i:i + batch], teacher_steps=teacher_steps, sigma_init=sigma_init)
        yield torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2)


def dataset_batches(dataset, batch: int) -> Iterator[torch.Tensor]:
    """uint8 NCHW batches of an `ImageZipDataset`, read lazily."""
    for i in range(0, len(dataset), batch):
        yield torch.stack([dataset[j][0] for j in range(i, min(i + batch, len(dataset)))])


def load_images(location: str) -> torch.Tensor:
    """uint8 NCHW images from a folder of PNGs (searched recursively, sorted) or an .npz with NHWC `images`."""
    path = Path(location)
    if path.is_dir():
        files = sorted(path.rglob("*.png"))
        if not files:
            raise MetricsError(f"no PNG images under {location}")
        arrays = [np.array(Image.open(f)) for f in tqdm(files, desc="reading images", unit="img", leave=False)]
        if len({a.shape for a in arrays}) != 1:
            raise MetricsError(f"images under {location} differ in size or channels")
        images = np.stack(arrays)
        images = images[..., None] if images.ndim == 3 else images
    elif path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                images = data["images"]
        except (KeyError, OSError, ValueError) as error:
            raise MetricsError(f"{location} is not an .npz with an 'images' array ({error})") from None
    else:
        raise MetricsError(f"--images {location} is neither a folder of PNGs nor an .npz file")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise MetricsError(f"{location}: images must be uint8 NHWC with 1 or 3 channels, got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------ measurement


@dataclass
class Measured:
    """What one pass of a detector over a set of images gives."""
    stats: FeatureStats
    probs: np.ndarray | None = None
    features: np.ndarray | None = None


def measure(detector: FeatureNet, batches: Iterable[torch.Tensor], total: int, *, probs: bool = False,
            keep_features: bool = False, desc: str = "features") -> Measured:
    """Feature statistics (and optionally class probabilities and all features) of uint8 NCHW batches."""
    out, all_probs, all_features = Measured(FeatureStats()), [], []
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for images in batches:
            features = detector.features(images)
            out.stats.update(features)
            if keep_features:
                all_features.append(features.float().numpy())
            if probs:
                all_probs.append(detector.probabilities(images).numpy())
            bar.update(len(images))
    out.probs = np.concatenate(all_probs) if probs else None
    out.features = np.concatenate(all_features) if keep_features else None
    return out


@functools.lru_cache(maxsize=4)
def _cached_detector(location: str, device: str) -> FeatureNet:
    return load_detector(location, device)


@functools.lru_cache(maxsize=4)
def _cached_stats(location: str) -> tuple[np.ndarray, np.ndarray]:
    return load_stats(location)


def generator_fid(G: torch.nn.Module, config) -> float:
    """FID of a one-step generator on seeds 0..config.metric_num-1 against config.metric_ref, with
    config.detector (both loaded once per path) and x_g = G(config.sigma_init z, config.sigma_init)."""
    device = next(G.parameters()).device
    detector = _cached_detector(config.detector, str(device))
    mu_ref, sigma_ref = _cached_stats(config.metric_ref)
    batches = generator_batches(G, list(range(config.metric_num)), config.batch_gpu or config.batch,
                                sigma_init=config.sigma_init)
    mu, sigma = measure(detector, batches, config.metric_num, desc="FID").stats.mean_cov()
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def summarize(values: list[float]) -> dict:
    """Mean and sample std (0 for one value) of per-trial results."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values]}


# -------------------------------------------------------------------------------------------------- CLI


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
    from full.dataset import ImageZipDataset
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
    from full.checkpoint import load_network
    net = load_network(args.network or args.teacher, device=device)
    seeds = [list(range(args.seed_start + t * args.num, args.seed_start + (t + 1) * args.num))
             for t in range(args.trials)]
    sources = [generator_batches(net, s, args.batch, teacher_steps=args.steps if args.teacher else None,
                                 sigma_init=args.sigma_init) for s in seeds]
    return (net.img_channels, net.img_resolution, net.img_resolution), seeds, sources


def run_calc(args) -> dict:
    from full.dataset import ImageZipDataset
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
