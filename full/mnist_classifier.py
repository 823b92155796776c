"""A small CNN digit classifier whose penultimate layer is the feature space of FID-MNIST.

    python -m full.dataset convert --source mnist5k --dest data/mnist16.zip --resolution 16
    python -m full.mnist_classifier train --data data/mnist16.zip --out assets/mnist16-classifier

Trained on a seeded shuffled split of the dataset (``held_out`` images kept aside, the rest for training)
with random shifts of up to one pixel. Saved as ``OUT.safetensors`` + ``OUT.json`` (`full.store.pair`:
architecture keyword arguments, the split, and provenance with the command and held-out accuracy); loaded
without pickle, the arguments checked and the shapes compared with the file before any weight is read.
The network follows the Inception detector interface of `full.metrics`: uint8 NCHW images in, and
``net(x, return_features=True)`` gives the 128-d penultimate activations (FID, precision/recall) while
``net(x)`` gives softmax class probabilities (Inception Score, class histograms of samples).
"""
from __future__ import annotations

import datetime
import hashlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.errors import CheckpointError

FORMAT = "sid-feature-net"
VERSION = 1


class ClassifierError(CheckpointError):
    """A classifier file that is missing, corrupt, or not of our format."""


class MnistClassifier(nn.Module):
    """conv3x3(width) -> conv3x3(width) -> pool -> conv3x3(2 width) -> pool -> linear(features) -> linear(classes)."""

    def __init__(self, resolution: int = 16, channels: int = 1, width: int = 32, features: int = 128, classes: int = 10):
        super().__init__()
        self.kwargs = dict(resolution=resolution, channels=channels, width=width, features=features, classes=classes)
        self.channels = channels
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * width * (resolution // 4) ** 2, features), nn.ReLU())
        self.head = nn.Linear(features, classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Features of float images in [-1, 1]."""
        return self.conv(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.dropout(self.penultimate(x), 0.3, self.training))

    def forward(self, images: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        """uint8 NCHW images -> [N, features] activations, or softmax probabilities (bias dropped on request)."""
        h = self.penultimate(images.float() / 127.5 - 1)
        if return_features:
            return h
        return F.linear(h, self.head.weight, None if no_output_bias else self.head.bias).softmax(dim=1)


def split_indices(n: int, held_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of a seeded permutation of range(n): the last `held_out` are held out."""
    order = np.random.default_rng(seed).permutation(n)
    return order[:n - held_out], order[n - held_out:]


def shift(x: torch.Tensor, max_shift: int, rng: torch.Generator) -> torch.Tensor:
    """Move each image by a random integer offset in [-max_shift, max_shift]^2, filling with background (-1)."""
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dy, dx = torch.randint(2 * max_shift + 1, (2, n, 1), generator=rng)
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)
    return padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    """Fraction of uint8 NCHW `images` whose most probable class is the label."""
    net.eval()
    right = sum(int((net(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum()) for i in range(0, len(images), batch))
    return right / len(images)


def train(images: torch.Tensor, labels: torch.Tensor, epochs: int = 20, batch: int = 64, lr: float = 2e-3,
          seed: int = 0, progress=None) -> MnistClassifier:
    """Adam with a cosine learning-rate decay and +-1 pixel shifts on uint8 NCHW `images`."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    net = MnistClassifier(resolution=images.shape[2], channels=images.shape[1], classes=int(labels.max()) + 1)
    x = images.float() / 127.5 - 1
    steps = epochs * math.ceil(len(x) / batch)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=rng)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(net.logits(shift(x[idx], 1, rng)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(epoch + 1, total / len(x))
    return net.eval()


def save_classifier(net: MnistClassifier, out: str, split: dict, provenance: dict) -> str:
    """Write OUT.safetensors then OUT.json atomically (a shared weights_id ties the pair); return the stem."""
    from full.store.pair import write_pair
    meta = {"version": VERSION, "architecture": "MnistClassifier", "kwargs": net.kwargs, "split": split,
            "provenance": provenance}
    return write_pair(out, net.state_dict(), meta, FORMAT)


# Limits on the constructor arguments a classifier file may give (checked before anything is built).
KWARG_LIMITS = {"resolution": (4, 1024), "channels": (1, 4), "width": (1, 1024), "features": (1, 4096),
                "classes": (1, 100_000)}


def _check_meta(meta: dict, meta_path) -> dict:
    """The classifier fields of a description: architecture and kwargs (known names, integers within limits)."""
    if meta.get("architecture") != "MnistClassifier":
        raise ClassifierError(f"{meta_path} is not a {FORMAT} MnistClassifier description")
    kwargs = meta.get("kwargs")
    if not isinstance(kwargs, dict):
        raise ClassifierError(f"{meta_path}: kwargs is missing or not an object")
    for key, value in kwargs.items():
        if key not in KWARG_LIMITS:
            raise ClassifierError(f"{meta_path}: kwargs.{str(key)[:60]} is not an argument of MnistClassifier; "
                                  f"known: {', '.join(KWARG_LIMITS)}")
        lo, hi = KWARG_LIMITS[key]
        if type(value) is not int or not lo <= value <= hi:
            raise ClassifierError(f"{meta_path}: kwargs.{key} is {str(value)[:60]}; expected an integer from {lo} to {hi}")
    return kwargs


def load_classifier(location: str | os.PathLike, weights_path: str | os.PathLike | None = None, *,
                    what: str = "classifier") -> MnistClassifier:
    """Rebuild the classifier from its pair, given as ``NAME``, ``NAME.json``, ``NAME.safetensors`` or a URL
    (`full.store.resolve`), or as the two paths (json, safetensors). The network is built on the meta
    device and compared with the safetensors header before the weights are read; no pickle is involved."""
    from full.store.pair import read_pair, read_tensors
    from full.store.resolve import PAIR, locate
    from full.store.safe_build import materialize
    if weights_path is None:
        found = locate(location, what, kinds=(PAIR,))
        meta_path, weights_path = found.path, found.weights
    else:
        meta_path = location
    meta, header = read_pair(meta_path, weights_path, FORMAT, VERSION, error=ClassifierError)
    kwargs = _check_meta(meta, meta_path)
    with torch.device("meta"):
        net = MnistClassifier(**kwargs)
    materialize(net, header.entries, lambda: read_tensors(header, ClassifierError), header.file_bytes,
                f"{weights_path} does not match MnistClassifier({kwargs})", error=ClassifierError)
    return net.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m full.mnist_classifier", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 2)[2])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the classifier and save OUT.safetensors + OUT.json")
    p.add_argument("--data", required=True, help="labelled EDM dataset zip (e.g. data/mnist16.zip)")
    p.add_argument("--out", required=True, help="output stem, e.g. assets/mnist16-classifier")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training split (default: 20)")
    p.add_argument("--held-out", type=int, default=1000, help="images kept aside for accuracy (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shifts (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    args = parser.parse_args(argv)
    try:
        from full.store.dataset_zip import ImageZipDataset
        if args.threads:
            torch.set_num_threads(args.threads)
        data = ImageZipDataset(args.data)
        if data.labels is None:
            raise ClassifierError(f"{args.data} has no labels")
        if not 0 < args.held_out < len(data):
            raise ClassifierError(f"--held-out must lie in (0, {len(data)})")
        images, labels = data.all_images(), torch.from_numpy(data.labels)
        train_idx, test_idx = split_indices(len(data), args.held_out, args.seed)
        start = time.perf_counter()
        net = train(images[train_idx], labels[train_idx], epochs=args.epochs, seed=args.seed,
                    progress=lambda e, loss: print(f"epoch {e}/{args.epochs}  loss {loss:.4f}", flush=True))
        seconds = time.perf_counter() - start
        held_out = accuracy(net, images[test_idx], labels[test_idx])
        provenance = {
            "command": "python -m full.mnist_classifier " + " ".join(sys.argv[1:] if argv is None else argv),
            "dataset": os.path.basename(args.data),
            "dataset_sha256": hashlib.sha256(Path(args.data).read_bytes()).hexdigest(),
            "held_out_accuracy": held_out, "train_accuracy": accuracy(net, images[train_idx], labels[train_idx]),
            "epochs": args.epochs, "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        split = {"n": len(data), "held_out": args.held_out, "seed": args.seed}
        stem = save_classifier(net, args.out, split, provenance)
        print(f"held-out accuracy {held_out:.4f} on {args.held_out} images ({seconds:.0f} s); "
              f"wrote {stem}.safetensors and {stem}.json")
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
