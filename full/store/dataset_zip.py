"""EDM's dataset format: a zip of images plus ``dataset.json`` (stored uncompressed by EDM), read as a stream.

Layout (NVlabs/edm ``dataset_tool.py``): images ``{i // 1000:05d}/img{i:08d}.png``, square with a power-of-two
side, 1 (L) or 3 (RGB) channels, and ``dataset.json`` = ``{"labels": [[name, class], ...]}`` or
``{"labels": null}``. EDM2's latent datasets (NVlabs/edm2 ``dataset_tool.py encode``) store float arrays
``{i // 1000:05d}/img-mean-std-{i:08d}.npy`` of shape [C, H, W] (the VAE's mean and std, C = 8) in the same
layout; `ImageZipDataset` reads both, as uint8 (PNG) or float32 (npy) tensors, like EDM2's
``ImageFolderDataset``.

Reading is streamed: opening a dataset reads the zip's directory, the label table (parsed and validated once)
and the header of the first image; images are decoded only when asked for, by `ImageZipDataset.batch`, so
memory stays bounded by the batch whatever the dataset's size. Each entry's header is checked against the
first image's size and type before its pixels are decoded (a 30000x30000 PNG is refused from its header),
and its CRC after it is read. The zip's directory is parsed once, into arrays of entry offsets and sizes, and then closed; entries are read
with positioned reads (``os.pread``) on one file descriptor per process, which share no file position. So a
dataset may be used from any number of threads at once and after ``fork`` (DataLoader workers: a child opens
its own descriptor), and pickling (spawned workers) drops the descriptor.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from full.errors import SidError
from full.store.atomic import atomic_write

MAX_SIDE = 4096                      # largest image side we read or write (pixels)
MAX_CHANNELS = 64                    # largest channel count of an .npy array
MAX_CLASSES = 100_000                # largest class index + 1 in dataset.json
MAX_LABEL_TABLE_BYTES = 1 << 30      # largest dataset.json we parse


def edm_side(n: int) -> bool:
    """Whether EDM datasets hold images (or latents) of side `n`: a power of two from 1 to MAX_SIDE."""
    return 1 <= n <= MAX_SIDE and not n & (n - 1)
DEFAULT_MAX_DECODED_BYTES = 1 << 31  # `all_images` refuses datasets larger than this once decoded
_PNG_COLOUR_TYPES = {0: 1, 2: 3}     # IHDR colour type -> channels: gray (L) and RGB, 8 bits each
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADER_BYTES = 1 << 16              # enough of an entry for its PNG or npy header


class DatasetError(SidError, ValueError):
    """A dataset that is missing, corrupt or not what the caller needs."""


def image_name(i: int) -> str:
    return f"{i // 1000:05d}/img{i:08d}.png"


def latent_name(i: int) -> str:
    """EDM2's name of latent item `i` (NVlabs/edm2 ``dataset_tool.py encode``)."""
    return f"{i // 1000:05d}/img-mean-std-{i:08d}.npy"


# ------------------------------------------------------------------------------------------------ writing


def _check_image(image: np.ndarray, i: int, first: tuple | None) -> np.ndarray:
    """HWC uint8 view of image `i` (HW is gray), checked to be square, a power of two and like the first."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise DatasetError(f"image {i} is {image.dtype} {image.shape}; images must be uint8 HxWx1 or HxWx3")
    h, w, _ = image.shape
    if h != w or not edm_side(h):
        raise DatasetError(f"image {i} is {w}x{h}; EDM datasets hold square images with a power-of-two side up "
                           f"to {MAX_SIDE} (resize with --resolution when converting)")
    if first is not None and image.shape != first:
        raise DatasetError(f"image {i} is {image.shape}, but image 0 is {first}; all images must share one size "
                           f"and channel count")
    return image


def _check_labels(labels) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise DatasetError(f"labels must be non-negative integer class indices, got {labels.dtype} {labels.shape}")
    return labels


def _write_zip(path: str | os.PathLike, entries: Iterable[tuple[str, bytes]], labels: np.ndarray | None,
               what: str) -> int:
    """Write (name, bytes) `entries`, consumed one at a time, and ``dataset.json`` with the labels as an EDM dataset
    zip, atomically (nothing is left on any error). Returns the number of entries."""
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        names = []
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, data in entries:
                zf.writestr(name, data)
                names.append(name)
            if not names:
                raise DatasetError(f"no {what} to write")
            if labels is not None and len(labels) != len(names):
                raise DatasetError(f"{len(labels)} labels for {len(names)} {what}")
            rows = None if labels is None else [[n, int(label)] for n, label in zip(names, labels)]
            zf.writestr("dataset.json", json.dumps({"labels": rows}))
        count = len(names)
    atomic_write(path, write)
    return count


def write_dataset(path: str | os.PathLike, images: np.ndarray | Iterable[np.ndarray],
                  labels: Sequence[int] | np.ndarray | None = None) -> int:
    """Write `images` (an NHWC uint8 array, or any iterable of HWC/HW uint8 images, consumed one at a time)
    and their integer class `labels` as an EDM dataset zip, atomically (nothing is left on any error).
    Returns the number of images."""
    def entries() -> Iterator[tuple[str, bytes]]:
        first = None
        for i, image in enumerate(images):
            image = _check_image(image, i, first)
            first = image.shape
            buf = io.BytesIO()
            Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="PNG", compress_level=0)
            yield image_name(i), buf.getvalue()
    return _write_zip(path, entries(), _check_labels(labels), "images")


def write_latent_dataset(path: str | os.PathLike, arrays: Iterable[np.ndarray],
                         labels: Sequence[int] | np.ndarray | None = None) -> int:
    """Write float32 arrays [C, H, W] (EDM2: the VAE posterior's mean and std, C = 8), consumed one at a time,
    as ``.npy`` entries named like EDM2's (`latent_name`) with ``dataset.json`` labels, atomically (nothing is
    left on any error). Returns the number of arrays."""
    def entries() -> Iterator[tuple[str, bytes]]:
        first = None
        for i, array in enumerate(arrays):
            array = np.ascontiguousarray(array, dtype=np.float32)
            side = array.shape[-1] if array.ndim == 3 else 0
            square = array.ndim == 3 and array.shape[1] == side and edm_side(side)
            if not square or not 1 <= array.shape[0] <= MAX_CHANNELS:
                raise DatasetError(f"latent {i} has shape {array.shape}; latent datasets hold [C, H, W] arrays, "
                                   f"square with a power-of-two side and at most {MAX_CHANNELS} channels")
            if first is not None and array.shape != first:
                raise DatasetError(f"latent {i} has shape {array.shape}, but latent 0 has {first}")
            first = array.shape
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            yield latent_name(i), buf.getvalue()
    return _write_zip(path, entries(), _check_labels(labels), "latents")


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class ImageFormat:
    """What every image of a dataset is: its storage kind ("png" or "npy"), channels and side."""
    kind: str
    channels: int
    resolution: int

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8 if self.kind == "png" else torch.float32

    def describe(self) -> str:
        colour = {1: "gray", 3: "RGB"}.get(self.channels, f"{self.channels}-channel") if self.kind == "png" \
            else f"{self.channels}-channel float"
        return f"{self.resolution}x{self.resolution} {colour}"


@dataclass(frozen=True)
class _Entry:
    """Where one member of the zip lives (from the central directory), enough to read it without zipfile."""
    name: str
    offset: int
    compressed: int
    size: int
    method: int
    crc: int


class ImageZipDataset(torch.utils.data.Dataset):
    """An EDM dataset zip, streamed. ``dataset[i]`` is (CHW image tensor, one-hot float32 label [label_dim]);
    ``dataset.batch(indices)`` is (NCHW images, one-hot labels [N, label_dim] or None).

    Attributes: ``path``, ``names`` (sorted image entries), ``labels`` (int64 [N] or None), ``label_dim``
    (largest label + 1, 0 without labels), ``format`` (`ImageFormat`), and its ``kind``, ``channels``,
    ``resolution``. `what` names the dataset in error messages, e.g. ``"--data"``.
    """

    def __init__(self, path: str | os.PathLike, what: str = "dataset"):
        self.path, self.what = os.fspath(path), what
        self._file, self._file_pid = None, None
        if not os.path.isfile(self.path):
            raise DatasetError(f"{self._name()} not found{' (it is a directory)' if os.path.isdir(self.path) else ''}; "
                               f"give an EDM dataset zip (create one with python -m full.dataset convert)")
        try:
            with zipfile.ZipFile(self.path) as zf:
                infos = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        except zipfile.BadZipFile:
            raise DatasetError(f"{self._name()} is not a zip file; EDM datasets are zips made by "
                               f"python -m full.dataset convert") from None
        except OSError as error:
            raise DatasetError(f"cannot read {self._name()}: {error.strerror or error}") from None
        pngs = sorted(n for n in infos if n.lower().endswith(".png"))
        npys = sorted(n for n in infos if n.lower().endswith(".npy"))
        if pngs and npys:
            raise DatasetError(f"{self._name()} mixes .png images ({len(pngs)}) and .npy arrays ({len(npys)}); "
                               f"a dataset holds one kind")
        self.names = pngs or npys
        if not self.names:
            raise DatasetError(f"{self._name()} holds no .png images or .npy arrays; create it with "
                               f"python -m full.dataset convert")
        for info in [infos[n] for n in self.names] + ([infos["dataset.json"]] if "dataset.json" in infos else []):
            if info.flag_bits & 1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise DatasetError(f"{self._name(info.filename)} is encrypted or compressed with method "
                                   f"{info.compress_type}; EDM datasets are plain (stored or deflated) zips")
        # The directory as arrays (not ZipInfo objects): a few dozen bytes per image, whatever the dataset's size.
        self._offsets = np.array([infos[n].header_offset for n in self.names], dtype=np.int64)
        self._compressed = np.array([infos[n].compress_size for n in self.names], dtype=np.int64)
        self._sizes = np.array([infos[n].file_size for n in self.names], dtype=np.int64)
        self._methods = np.array([infos[n].compress_type for n in self.names], dtype=np.uint8)
        self._crcs = np.array([infos[n].CRC for n in self.names], dtype=np.uint32)
        self.format = self._probe(0)
        label_table = infos.get("dataset.json")
        del infos
        self.labels = None if label_table is None else self._read_labels(self._entry_of(label_table))
        self.label_dim = 0 if self.labels is None else int(self.labels.max()) + 1

    # The format, in short.
    kind = property(lambda self: self.format.kind)
    channels = property(lambda self: self.format.channels)
    resolution = property(lambda self: self.format.resolution)

    def _name(self, entry: str | None = None) -> str:
        where = f"{self.what} {self.path}" if self.what != "dataset" else self.path
        return where if entry is None else f"{where}: {entry}"

    # ----------------------------------------------------------------------------- reading entries

    def _handle(self):
        """This process's file (a forked child opens its own). Callers keep the returned object while they read."""
        handle = self._file
        if handle is None or self._file_pid != os.getpid():
            try:
                handle = open(self.path, "rb", buffering=0)
            except OSError as error:
                raise DatasetError(f"cannot read {self._name()}: {error.strerror or error}") from None
            self._file, self._file_pid = handle, os.getpid()
        return handle

    def close(self) -> None:
        """Close this process's file (it reopens on the next read); call it when no read is in flight."""
        if self._file is not None and self._file_pid == os.getpid():
            self._file.close()
        self._file, self._file_pid = None, None

    def __enter__(self) -> "ImageZipDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_file_pid": None}

    @staticmethod
    def _entry_of(info: zipfile.ZipInfo) -> _Entry:
        return _Entry(info.filename, info.header_offset, info.compress_size, info.file_size, info.compress_type,
                      info.CRC)

    def _entry(self, i: int) -> _Entry:
        return _Entry(self.names[i], int(self._offsets[i]), int(self._compressed[i]), int(self._sizes[i]),
                      int(self._methods[i]), int(self._crcs[i]))

    def _read_entry(self, entry: _Entry, prefix: int | None = None) -> bytes:
        """The bytes of `entry` (only the first `prefix` of them if given), read by offset and checked (CRC)."""
        handle = self._handle()
        fd = handle.fileno()
        local = os.pread(fd, 30, entry.offset)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise DatasetError(f"{self._name(entry.name)} cannot be read: the zip is damaged (no local header)")
        start = entry.offset + 30 + sum(struct.unpack("<HH", local[26:30]))
        want = entry.size if prefix is None else min(prefix, entry.size)
        if entry.method == zipfile.ZIP_STORED:
            data = os.pread(fd, want, start)
        else:
            try:
                data = zlib.decompressobj(-15).decompress(os.pread(fd, entry.compressed, start), want)
            except zlib.error as error:
                raise DatasetError(f"{self._name(entry.name)} cannot be decompressed ({error})") from None
        if len(data) != want or prefix is None and zlib.crc32(data) != entry.crc:
            raise DatasetError(f"{self._name(entry.name)} is damaged (truncated or failing its checksum)")
        return data

    # ----------------------------------------------------------------------------- labels

    def _read_labels(self, table_entry: _Entry) -> np.ndarray | None:
        """The labels of `self.names` from dataset.json, checked entry by entry (EDM: absent = unlabelled)."""
        where = self._name("dataset.json")
        if table_entry.size > MAX_LABEL_TABLE_BYTES:
            raise DatasetError(f"{where} is {table_entry.size / 2 ** 20:.0f} MiB; a label table is at most "
                               f"{MAX_LABEL_TABLE_BYTES >> 20} MiB")
        raw = self._read_entry(table_entry)
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError) as error:  # json's errors (UnicodeDecodeError is a ValueError)
            raise DatasetError(f"{where} is not valid JSON ({error})") from None
        if not isinstance(meta, dict) or "labels" not in meta:
            raise DatasetError(f'{where} must be an object with a "labels" entry: a list of [name, class] pairs, '
                               f'or null for an unlabelled dataset')
        table = meta["labels"]
        if table is None:
            return None
        if not isinstance(table, list):
            raise DatasetError(f'{where}: "labels" is a {type(table).__name__}; it must be a list of '
                               f'[name, class] pairs, or null')
        if len(table) != len(self.names):
            raise DatasetError(f"{where} lists {len(table)} labels for {len(self.names)} images; it needs one "
                               f"[name, class] pair per image")
        index = {name: i for i, name in enumerate(self.names)}
        labels = np.full(len(self.names), -1, dtype=np.int64)
        for entry in table:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f"{where}: label entry {json.dumps(entry)[:60]} is not a [name, class] pair")
            name, label = entry[0].replace("\\", "/"), entry[1]
            if isinstance(label, float) and label.is_integer():
                label = int(label)
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < MAX_CLASSES:
                raise DatasetError(f"{where}: the label of {name} is {json.dumps(label)[:40]}; labels are class "
                                   f"indices 0, 1, 2, ... below {MAX_CLASSES}")
            i = index.get(name)
            if i is None:
                raise DatasetError(f"{where} labels {name}, which is not an image in the zip")
            if labels[i] >= 0:
                raise DatasetError(f"{where} labels {name} twice")
            labels[i] = label
        return labels  # one entry per image, no duplicates, all names known: every image has its label

    # ----------------------------------------------------------------------------- images

    def _format_of(self, name: str, data: bytes) -> ImageFormat:
        """The format an entry's header (the start of `data`) declares, checked to be one EDM can use."""
        kind = "png" if self.names[0].lower().endswith(".png") else "npy"
        header = png_header(data) if kind == "png" else npy_header(data)
        if isinstance(header, str):
            raise DatasetError(f"{self._name(name)} {header}")
        width, height, channels = header
        if width != height or not edm_side(width):
            raise DatasetError(f"{self._name(name)} is {width}x{height}; EDM datasets hold square images with a "
                               f"power-of-two side up to {MAX_SIDE} (convert them with --resolution)")
        if not 1 <= channels <= MAX_CHANNELS:
            raise DatasetError(f"{self._name(name)} has {channels} channels; at most {MAX_CHANNELS} are read")
        return ImageFormat(kind, channels, width)

    def _probe(self, i: int) -> ImageFormat:
        """The format of image `i` from the start of its entry alone (nothing is decoded)."""
        entry = self._entry(i)
        return self._format_of(entry.name, self._read_entry(entry, prefix=_HEADER_BYTES))

    def _check_same(self, name: str, found: ImageFormat) -> None:
        if found != self.format:
            raise DatasetError(f"{self._name(name)} is {found.describe()}, but {self.names[0]} is "
                               f"{self.format.describe()}; all images of a dataset must share one size and "
                               f"channel count")

    def read(self, i: int) -> np.ndarray:
        """Image `i` as a CHW array (uint8 for PNG, float32 for npy), checked against the dataset's format
        from its header before its pixels are decoded."""
        if not 0 <= i < len(self.names):
            raise IndexError(f"image {i} of a dataset of {len(self.names)}")
        entry, fmt = self._entry(i), self.format
        limit = 2 * fmt.channels * fmt.resolution ** 2 * (1 if fmt.kind == "png" else 8) + _HEADER_BYTES
        if entry.size > limit or entry.compressed > limit:
            raise DatasetError(f"{self._name(entry.name)} is {entry.size} bytes, far more than a {fmt.describe()} "
                               f"image needs; the zip is damaged or holds something else")
        data = self._read_entry(entry)
        self._check_same(entry.name, self._format_of(entry.name, data))
        try:
            if fmt.kind == "npy":
                array = np.load(io.BytesIO(data), allow_pickle=False)
                return array.reshape(fmt.channels, fmt.resolution, fmt.resolution).astype(np.float32)
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            array = np.asarray(image)
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as error:
            # PIL's and numpy's errors for damaged data
            raise DatasetError(f"{self._name(entry.name)} is damaged ({error})") from None
        if array.dtype != np.uint8 or array.shape != ((fmt.resolution,) * 2 + ((3,) if fmt.channels == 3 else ())):
            raise DatasetError(f"{self._name(entry.name)} decodes to {array.dtype} {array.shape}, not {fmt.describe()}")
        return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy()

    def label(self, i: int) -> torch.Tensor:
        """One-hot float32 label [label_dim] of image `i` (empty without labels)."""
        label = torch.zeros(self.label_dim)
        if self.labels is not None:
            label[self.labels[i]] = 1
        return label

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.read(i)), self.label(i)

    def batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray, images: bool = True,
              label_dim: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Images `indices` as an NCHW tensor (uint8 for PNG, float32 for npy; None when `images` is False, for
        labels alone) and their one-hot float32 labels [N, label_dim] (default width: this dataset's
        ``label_dim``), or None for an unlabelled dataset. Indices may repeat, in any order."""
        indices = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        out = None
        if images:
            out = torch.empty((len(indices), self.channels, self.resolution, self.resolution), dtype=self.format.dtype)
            for row, i in enumerate(indices):
                out[row] = torch.from_numpy(self.read(i))
        if self.labels is None:
            return out, None
        if any(not 0 <= i < len(self) for i in indices):
            raise IndexError(f"indices outside a dataset of {len(self)}")
        width = self.label_dim if label_dim is None else label_dim
        if width < self.label_dim:
            raise ValueError(f"one-hot labels of width {width} cannot hold this dataset's {self.label_dim} classes")
        return out, torch.nn.functional.one_hot(torch.from_numpy(self.labels[indices]), width).float()

    def batches(self, size: int, indices: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """`batch` over `indices` (default: every image in order), `size` at a time."""
        if size < 1:
            raise ValueError(f"batch size must be positive, got {size}")
        indices = range(len(self)) if indices is None else indices
        for start in range(0, len(indices), size):
            yield self.batch(indices[start:start + size])

    def all_images(self, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> torch.Tensor:
        """Every image as one NCHW tensor, for small datasets; refused beyond `max_bytes` once decoded."""
        need = len(self) * self.channels * self.resolution ** 2 * self.format.dtype.itemsize
        if need > max_bytes:
            raise DatasetError(f"{self._name()} holds {len(self)} images, {need / 2 ** 30:.1f} GiB decoded; read it "
                               f"in batches (dataset.batch) instead of all at once")
        return torch.cat([images for images, _ in self.batches(1024)])

    def verify(self) -> None:
        """Check every entry's header (size, channels) without decoding pixels."""
        for i, name in enumerate(self.names):
            self._check_same(name, self._probe(i))

    # ----------------------------------------------------------------------------- against a teacher

    def describe(self) -> str:
        """E.g. "32x32 RGB images with 10 labels"."""
        return f"{self.format.describe()} images with {self.label_dim} labels"

    def check_matches(self, resolution: int, channels: int, label_dim: int, what: str | None = None) -> None:
        """Raise `DatasetError` (one line) unless this dataset can feed a network of `resolution`, `channels`
        and `label_dim` classes: the same size and channels, and for a conditional network (label_dim > 0) the
        same number of classes (an unconditional network ignores labels; an unlabelled dataset cannot feed a
        conditional one). `what` names the dataset's option in the message, e.g. "--data"."""
        labels_fit = label_dim == 0 or self.label_dim == label_dim
        if resolution == self.resolution and channels == self.channels and labels_fit:
            return
        plural = "channel" if channels == 1 else "channels"
        raise DatasetError(f"{what or self.what} {self.path} holds {self.describe()}, but the teacher is "
                           f"{resolution}x{resolution} with {channels} {plural} and {label_dim} labels; use the "
                           f"teacher's training set")


def png_header(data: bytes) -> tuple[int, int, int] | str:
    """(width, height, channels) of a PNG from its IHDR chunk (the first 33 bytes of `data`), or why it cannot
    be an EDM image (not a PNG, absurd size, not 8-bit gray or RGB). Nothing is decoded."""
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return "is not a PNG image"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        return f"is {width}x{height}; images are read up to {MAX_SIDE}x{MAX_SIDE} pixels"
    if depth != 8 or colour not in _PNG_COLOUR_TYPES:
        kind = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}.get(colour, f"colour type {colour}")
        return f"is a {depth}-bit {kind} PNG; EDM datasets hold 8-bit gray (L) or RGB images"
    return width, height, _PNG_COLOUR_TYPES[colour]


def read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the .npy header at `f`'s position, version 1 or 2; nothing else read.
    numpy raises ValueError (or EOFError) for a broken header."""
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    return read(f)


def npy_header(data: bytes) -> tuple[int, int, int] | str:
    """(width, height, channels) of an .npy array [..., H, W] from its header at the start of `data` (EDM2
    flattens the leading axes into channels), or why it is not usable."""
    try:
        shape, _, dtype = read_npy_header(io.BytesIO(data))
    except (ValueError, EOFError, OSError) as error:  # numpy's errors for broken headers
        return f"is not an .npy array ({error})"
    if dtype.kind not in "fui" or dtype.hasobject or len(shape) < 2:
        return f"holds a {dtype} array of shape {tuple(shape)}; latent datasets hold numeric [C, H, W] arrays"
    channels = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    return int(shape[-1]), int(shape[-2]), channels


def label_sampler(path: str, label_dim: int):
    """Draw one-hot labels from a dataset's label frequencies (--labels-from)."""
    dataset = ImageZipDataset(path, what="--labels-from")
    if dataset.labels is None or not 0 < dataset.label_dim <= label_dim:
        raise DatasetError(f"--labels-from {path} has {dataset.label_dim or 'no'} labels, which cannot feed a teacher "
                           f"with {label_dim} classes; give the teacher's labelled training set")
    labels = torch.from_numpy(dataset.labels)

    def sample(n: int, rng: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(labels), (n,), generator=rng, device=rng.device).cpu()
        return torch.nn.functional.one_hot(labels[idx], label_dim).float()
    return sample
