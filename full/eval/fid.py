"""The maths of FID, Inception Score and precision/recall, on feature arrays (no networks, no files but EDM's .npz).

Heusel et al. (2017) for the Frechet distance, Salimans et al. (2016) for the Inception Score, Kynkaanniemi
et al. (2019) for improved precision and recall; statistics in EDM's format (``mu``, unbiased ``sigma``).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import scipy.linalg
import scipy.special
import torch

from full.eval.detectors import MetricsError
from full.store.resolve import fetch


class FeatureStats:
    """Running mean and unbiased (N-1) covariance of features in float64, merged batch by batch
    with the pairwise update of Chan, Golub and LeVeque (1979)."""

    def __init__(self):
        self.n, self.mu, self.m2 = 0, None, None

    @classmethod
    def of(cls, features: torch.Tensor | np.ndarray) -> "FeatureStats":
        """The statistics of one feature matrix [N, D]."""
        stats = cls()
        stats.update(features)
        return stats

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
    from full.store.atomic import atomic_write

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
    return checked_stats(mu, sigma, str(location))


def checked_stats(mu: np.ndarray, sigma: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """mu [D] and sigma [D, D], finite, as reference statistics read from `where` must be."""
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise MetricsError(f"{where}: mu {mu.shape} and sigma {sigma.shape} should be [D] and [D, D]")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricsError(f"{where} holds non-finite statistics")
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


def summarize(values: list[float]) -> dict:
    """Mean and sample std (0 for one value) of per-trial results."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values]}
