"""EDM's dataset format: an uncompressed zip of PNGs plus dataset.json (reading and writing).

Layout (EDM's dataset_tool): images ``{i // 1000:05d}/img{i:08d}.png`` (square, power-of-two side,
1 or 3 channels) and ``dataset.json`` = ``{"labels": [[name, int], ...]}`` or ``{"labels": null}``.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import torch
from PIL import Image

from full.errors import SidError
from full.store.atomic import atomic_write


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

    def sample(n: int, rng: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(labels), (n,), generator=rng, device=rng.device).cpu()
        return torch.nn.functional.one_hot(labels[idx], label_dim).float()
    return sample
