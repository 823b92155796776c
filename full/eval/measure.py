"""Measuring generators, teachers, datasets and image folders with a feature network."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from full.eval.detectors import FeatureNet, MetricsError, load_detector
from full.eval.fid import FeatureStats, frechet_distance, load_stats


def generator_batches(net: torch.nn.Module, seeds: list[int], batch: int, *, teacher_steps: int | None = None,
                      sigma_init: float | None = None) -> Iterator[torch.Tensor]:
    """uint8 NCHW images of a one-step generator (or a teacher with `teacher_steps` Heun steps) for `seeds`."""
    from full.eval.sampling import sample_images
    from full.eval.images import to_uint8
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
