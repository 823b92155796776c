"""Measuring generators, teachers, datasets and image sets with a feature network (EDM's FID protocol).

The library behind ``python -m full.metrics``: image sources as streams of uint8 NCHW batches
(`generator_batches`, `dataset_batches`, `ImageSet`), one detector pass over a stream (`measure`), reference
statistics of a dataset (`reference_statistics`) and FID / Inception Score / precision-recall over disjoint
trials (`evaluate`).
"""
from __future__ import annotations

import functools
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from full.eval.detectors import FeatureNet, MetricsError, load_detector
from full.eval.fid import (FeatureStats, checked_stats, frechet_distance, inception_score, load_stats, precision_recall,
                           summarize)


# ------------------------------------------------------------------------------------------ image sources


def generator_batches(net: torch.nn.Module, seeds: Sequence[int], batch: int, *, sampler=None,
                      teacher_steps: int | None = None, sigma_init: float | None = None,
                      class_idx: int | None = None, encoder=None) -> Iterator[torch.Tensor]:
    """uint8 NCHW images of a one-step generator, or of a teacher through `sampler` (a `SamplerConfig` or
    preset name) and/or `teacher_steps` Heun steps, for `seeds` (a list, range or `Seeds`), `batch` at a time,
    decoded by `encoder` (`full.store.latent`; default: the network's own, which for a latent network must
    have been given its VAE with ``with_vae``)."""
    from full.eval.sampling import sample_pixels
    for i in range(0, len(seeds), batch):
        yield sample_pixels(net, seeds[i:i + batch], encoder=encoder, sampler=sampler, teacher_steps=teacher_steps,
                            sigma_init=sigma_init, class_idx=class_idx).cpu()


def dataset_batches(dataset, batch: int) -> Iterator[torch.Tensor]:
    """uint8 NCHW batches of an `ImageZipDataset`, streamed in order."""
    for images, _ in dataset.batches(batch):
        yield images


class ImageSet:
    """Images to measure, given as a folder of PNGs (searched recursively, sorted, every header checked when
    the set opens, pixels read lazily) or an .npz with a uint8 NHWC ``images`` array (EDM's and
    ``full.generate --npz``'s format). ``batch(indices)`` gives uint8 NCHW tensors."""

    def __init__(self, location: str):
        self.location = location
        path = Path(location)
        self.files, self.array = None, None
        if path.is_dir():
            self.files = sorted(path.rglob("*.png"))
            if not self.files:
                raise MetricsError(f"--images {location}: no PNG images under this folder")
            self.shape = self._header(self.files[0])
            for file in self.files[1:]:  # headers only: a mixed folder stops before any measuring
                self._check(file, self._header(file))
        elif path.is_file() and path.suffix == ".npz":
            self.array = _load_npz_images(location)
            n, h, w, c = self.array.shape
            self.shape = (c, h, w)
        else:
            raise MetricsError(f"--images {location} is neither a folder of PNGs nor an .npz file")

    def _header(self, file: Path) -> tuple[int, int, int]:
        """(channels, height, width) of a PNG file from its first bytes."""
        from full.store.dataset_zip import png_header
        with open(file, "rb") as f:
            header = png_header(f.read(33))
        if isinstance(header, str):
            raise MetricsError(f"--images: {file} {header}")
        width, height, channels = header
        return channels, height, width

    def _check(self, file: Path, shape: tuple[int, int, int]) -> None:
        if shape != self.shape:
            (c, h, w), (c0, h0, w0) = shape, self.shape
            raise MetricsError(f"--images: {file} is {w}x{h} with {c} channel(s), unlike {self.files[0]} ({w0}x{h0} "
                               f"with {c0}); all images must share one size and channel count")

    def _read(self, file: Path) -> np.ndarray:
        self._check(file, self._header(file))
        try:
            with Image.open(file, formats=["PNG"]) as image:
                array = np.asarray(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # PIL's decode errors
            raise MetricsError(f"--images: {file} is damaged ({error})") from None
        if array.shape[:2] != self.shape[1:]:
            raise MetricsError(f"--images: {file} decodes to {array.shape}, unlike its header")
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.array)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        if self.array is not None:
            return torch.from_numpy(self.array[np.asarray(indices, dtype=np.int64)]).permute(0, 3, 1, 2)
        return torch.from_numpy(np.stack([self._read(self.files[i]) for i in indices]))

    def batches(self, indices: Sequence[int], size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(indices), size):
            yield self.batch(indices[start:start + size])


def _load_npz_images(location: str) -> np.ndarray:
    """The ``images`` array of an .npz, its header checked (uint8 NHWC, 1 or 3 channels) before it is read."""
    from full.store.dataset_zip import MAX_SIDE, read_npy_header
    try:
        with zipfile.ZipFile(location) as zf:
            if "images.npy" not in zf.namelist():
                raise MetricsError(f"--images {location} has no 'images' array")
            with zf.open("images.npy") as f:
                shape, _, dtype = read_npy_header(f)
        if dtype != np.uint8 or len(shape) != 4 or shape[3] not in (1, 3) or max(shape[1:3]) > MAX_SIDE:
            raise MetricsError(f"--images {location}: 'images' must be uint8 NHWC with 1 or 3 channels and at most "
                               f"{MAX_SIDE} pixels a side, got {dtype} {tuple(shape)}")
        with np.load(location, allow_pickle=False) as data:
            return data["images"]
    except MetricsError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:  # zipfile's and numpy's read errors
        raise MetricsError(f"--images {location} is not a readable .npz file ({error})") from None


# ------------------------------------------------------------------------------------------ reference statistics


class _ReferenceUnpickler(pickle.Unpickler):
    """EDM2's reference statistics are a pickled dict of dicts of numpy arrays: admit numpy's array and scalar
    reconstruction only, as inert stand-ins rebuilt from their bytes (`full.store.edm_pickle`); nothing runs."""

    def find_class(self, module: str, name: str):
        from full.store.edm_pickle import NUMPY_GLOBALS
        if (module, name) not in NUMPY_GLOBALS:
            raise MetricsError(f"refused global {module[:60]}.{name[:60]}: EDM2's reference statistics never need it")
        return NUMPY_GLOBALS[(module, name)]


def load_reference(location: str, metric: str = "fid") -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of `metric` ("fid" or "fd_dinov2") from reference statistics: EDM's .npz (one metric: mu,
    sigma; `full.eval.fid.load_stats`) or EDM2's .pkl (NVlabs/edm2 calculate_metrics.py ``save_stats``:
    {metric: {mu, sigma}, ...}, e.g. https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img512.pkl), read by a
    whitelisting unpickler that admits numpy arrays alone; path or URL."""
    if not str(location).split("?")[0].endswith(".pkl"):
        return load_stats(location)
    from full.store.resolve import fetch
    from full.store.edm_pickle import NumpyArray
    path = fetch(str(location))
    try:
        with open(path, "rb") as f:
            top = _ReferenceUnpickler(f).load()
    except MetricsError as error:
        raise MetricsError(f"{location}: {error}") from None
    except FileNotFoundError:
        raise MetricsError(f"reference statistics not found: {location}") from None
    except Exception as error:  # any parse failure of untrusted bytes is a bad file
        raise MetricsError(f"{location} is not readable reference statistics ({type(error).__name__})") from None
    entry = top.get(metric) if isinstance(top, dict) else None
    if not (isinstance(entry, dict) and all(isinstance(entry.get(k), NumpyArray) for k in ("mu", "sigma"))):
        found = sorted(k for k in top if isinstance(k, str)) if isinstance(top, dict) else []
        raise MetricsError(f"{location} holds no {metric} statistics (it has {', '.join(found) or 'none'}); EDM2's "
                           f"reference files hold fid and fd_dinov2")
    return checked_stats(*(np.asarray(entry[k].array, np.float64) for k in ("mu", "sigma")), f"{location} ({metric})")


# ------------------------------------------------------------------------------------------ measurement


@dataclass
class Measured:
    """What one pass of a detector (and of `extra` detectors, e.g. DINOv2 beside Inception) over a set of
    images gives."""
    stats: FeatureStats
    probs: np.ndarray | None = None
    features: np.ndarray | None = None
    extra_stats: list[FeatureStats] | None = None


def measure(detector: FeatureNet, batches: Iterable[torch.Tensor], total: int, *, probs: bool = False,
            keep_features: bool = False, desc: str = "features", extra: Sequence[FeatureNet] = ()) -> Measured:
    """Feature statistics (and optionally class probabilities and all features) of uint8 NCHW batches, and the
    feature statistics of each `extra` detector on the same images (one pass over the images)."""
    out, all_probs, all_features = Measured(FeatureStats()), [], []
    out.extra_stats = [FeatureStats() for _ in extra]
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for images in batches:
            features = detector.features(images)
            out.stats.update(features)
            for other, stats in zip(extra, out.extra_stats):
                stats.update(other.features(images))
            if keep_features:
                all_features.append(features.float().numpy())
            if probs:
                all_probs.append(detector.probabilities(images).numpy())
            bar.update(len(images))
    out.probs = np.concatenate(all_probs) if probs else None
    out.features = np.concatenate(all_features) if keep_features else None
    return out


def check_dims(detector: FeatureNet, shape: tuple[int, ...], dim: int, ref: str, ref_option: str = "--ref") -> None:
    """Refuse reference statistics (given as `ref_option` `ref`) whose dimension differs from the detector's
    features on `shape` images."""
    try:
        got = detector.features(torch.zeros((1, *shape), dtype=torch.uint8)).shape[1]
    except RuntimeError as error:  # a layer that cannot take this image size (a fixed-size classifier)
        raise MetricsError(f"{detector.name} cannot read {shape[1]}x{shape[2]} images with {shape[0]} channel(s) "
                           f"({str(error).splitlines()[0]}); use a detector for this image size") from None
    if got != dim:
        raise MetricsError(f"{ref_option} {ref} holds {dim}-d statistics but {detector.name} gives {got}-d features; "
                           f"compute the reference with the same --detector")


def reference_statistics(dataset, detector: FeatureNet, batch: int,
                         extra: Sequence[FeatureNet] = ()) -> FeatureStats | list[FeatureStats]:
    """Feature statistics of every image of an `ImageZipDataset` (EDM's reference .npz holds their mean_cov);
    with `extra` detectors, the list [main, *extra] of statistics from one pass over the images."""
    m = measure(detector, dataset_batches(dataset, batch), len(dataset), desc="reference", extra=extra)
    return [m.stats, *m.extra_stats] if extra else m.stats


def evaluate(detector: FeatureNet, ref: tuple[np.ndarray, np.ndarray], trials: Sequence[Callable[[], Iterable[torch.Tensor]]],
             num: int, *, inception: bool = True, real_features: np.ndarray | None = None,
             distances: dict[str, tuple[FeatureNet, tuple[np.ndarray, np.ndarray]]] | None = None) -> dict:
    """FID against `ref` = (mu, sigma) of each trial (a callable giving that trial's uint8 NCHW batches, `num`
    images), and with `inception` the Inception Score and the predicted-class histogram, and with
    `real_features` improved precision/recall (k = 3), and for each entry name: (detector, ref) of `distances`
    the Fréchet distance in that detector's features (e.g. "fd_dinov2"), on the same images. Returns per-metric
    `summarize` dicts (mean, sample std over trials, values); "is" also holds the std over its 10 splits per
    trial."""
    distances = distances or {}
    want_probs = inception and detector.has_probs
    if want_probs and num < 10:
        raise MetricsError(f"the Inception Score needs --num of at least 10 (its 10 splits), got {num}; or pass --no-is")
    results: dict[str, list] = {"fid": [], **{name: [] for name in distances}, "is": [], "is_split_std": [],
                                "precision": [], "recall": []}
    classes = []
    for t, batches in enumerate(trials):
        m = measure(detector, batches(), num, probs=want_probs, keep_features=real_features is not None,
                    desc=f"trial {t + 1}/{len(trials)}", extra=[d for d, _ in distances.values()])
        results["fid"].append(frechet_distance(*m.stats.mean_cov(), *ref))
        for (name, (_, other_ref)), stats in zip(distances.items(), m.extra_stats):
            results[name].append(frechet_distance(*stats.mean_cov(), *other_ref))
        if want_probs:
            score, split_std = inception_score(m.probs)
            results["is"].append(score)
            results["is_split_std"].append(split_std)
            classes.append(np.bincount(m.probs.argmax(axis=1), minlength=m.probs.shape[1]))
        if real_features is not None:
            precision, recall = precision_recall(real_features, m.features)
            results["precision"].append(precision)
            results["recall"].append(recall)
    report = {k: summarize(v) for k, v in results.items() if v and k != "is_split_std"}
    if want_probs:
        report["is"]["split_std"] = results["is_split_std"]
        report["class_histogram"] = [int(c) for c in np.sum(classes, axis=0)]
    return report


def image_set_trials(images: ImageSet, num: int, trials: int, batch: int) -> list[Callable[[], Iterator[torch.Tensor]]]:
    """Disjoint random subsets of `num` images (EDM: a permutation with seed 0), one per trial."""
    if len(images) < num * trials:
        raise MetricsError(f"--images {images.location} holds {len(images)} images; {trials} trial(s) of --num "
                           f"{num} need {num * trials}")
    order = np.random.default_rng(0).permutation(len(images))
    return [functools.partial(images.batches, order[t * num:(t + 1) * num], batch) for t in range(trials)]


# ------------------------------------------------------------------------------------------ during training


@functools.lru_cache(maxsize=4)
def cached_detector(location: str, device: str) -> FeatureNet:
    """`load_detector`, loaded once per (location, device) in this process."""
    return load_detector(location, device)


@functools.lru_cache(maxsize=4)
def cached_stats(location: str) -> tuple[np.ndarray, np.ndarray]:
    """`load_reference`'s FID statistics (EDM's .npz or EDM2's .pkl), loaded once per location in this process."""
    return load_reference(location, "fid")


def generator_fid(G: torch.nn.Module, config) -> float:
    """FID of a one-step generator on seeds 0..config.metric_num-1 against config.metric_ref, with
    config.detector (both loaded once per path) and x_g = G(config.sigma_init z, config.sigma_init), decoded
    by config.vae for a latent generator."""
    from full.store.latent import decoder_for
    device = next(G.parameters()).device
    detector = cached_detector(config.detector, str(device))
    mu_ref, sigma_ref = cached_stats(config.metric_ref)
    batches = generator_batches(G, range(config.metric_num), config.batch_gpu or config.batch,
                                sigma_init=config.sigma_init, encoder=decoder_for(G, getattr(config, "vae", "")))
    mu, sigma = measure(detector, batches, config.metric_num, desc="FID").stats.mean_cov()
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
