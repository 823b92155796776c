"""Our file pair: ``NAME.safetensors`` (the tensors) and ``NAME.json`` (what they are), written and read as one.

The JSON holds ``{"format", "version", ..., "weights_id"}``; the same random ``weights_id`` is written into
the safetensors metadata, so a pair left mismatched by an interrupted save is detected. `write_pair` writes
the safetensors file first and the JSON last, each atomically (`full.store.atomic`). Networks
(`full.store.network_file`, format ``sid-network``) and the FID-MNIST classifier (`full.mnist_classifier`,
format ``sid-feature-net``) add their own fields.

Reading never trusts the files: the JSON has a size limit and must parse to an object, and the safetensors
header (names, dtypes, shapes, byte offsets) is read and checked against the file size before any tensor
data is touched (`read_header`), so callers can compare shapes with the network they are about to build.
Every problem is one `CheckpointError` (or the caller's subclass of `SidError`) that names the file.
"""
from __future__ import annotations

import json
import math
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from full.errors import CheckpointError
from full.store.atomic import atomic_write, atomic_write_text

MAX_JSON_BYTES = 16 << 20       # a description is a few kB
MAX_HEADER_BYTES = 64 << 20     # safetensors itself allows 100 MB
MAX_ENTRIES = 100_000           # tensors in one file; EDM2-XXL has about 1,200
MAX_RANK = 8

# safetensors dtype names -> (torch dtype, bytes per element)
DTYPES = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}


class TensorEntry(NamedTuple):
    """dtype and shape of one tensor, known before its data is read (a pair, as `materialize` takes it)."""

    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class Header:
    """The checked header of a safetensors file: its entries, string metadata and the file's size in bytes."""

    path: Path
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    file_bytes: int


def read_json(path: str | os.PathLike, error: type[Exception] = CheckpointError) -> dict:
    """A JSON object from a file of at most `MAX_JSON_BYTES`; any failure is one ``error`` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise error(f"{path} is larger than {MAX_JSON_BYTES >> 20} MB; a description of ours is a few kB")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, or nested beyond the parser's depth
        raise error(f"cannot read {path}: not valid JSON ({str(e)[:200]})") from None
    if not isinstance(value, dict):
        raise error(f"{path} does not hold a JSON object")
    return value


def _bad(path, what: str, error) -> Exception:
    return error(f"{path} is not a valid safetensors file: {what}; re-save or re-download it")


def read_header(path: str | os.PathLike, error: type[Exception] = CheckpointError) -> Header:
    """Parse and check the header of a safetensors file without reading tensor data.

    Checks: header length within the file, JSON object, known dtypes, shapes of non-negative integers, byte
    ranges that match ``numel * itemsize``, lie inside the data section and do not overlap.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _bad(path, f"only {size} bytes", error)
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise _bad(path, f"its header claims {length:,} bytes but the file has {size:,}", error)
            raw = f.read(length)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _bad(path, "its header is not JSON", error) from None
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object", error)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _bad(path, "its __metadata__ is not a map of strings", error)
    if len(header) > MAX_ENTRIES:
        raise _bad(path, f"{len(header):,} tensors", error)
    data_bytes = size - 8 - length
    entries, ranges = {}, []
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("dtype"), str)
                and isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)):
            raise _bad(path, f"entry {name[:100]!r} lacks dtype, shape or data_offsets", error)
        if info["dtype"] not in DTYPES:
            raise _bad(path, f"entry {name[:100]!r} has unknown dtype {info['dtype'][:20]!r}", error)
        dtype, itemsize = DTYPES[info["dtype"]]
        shape, offsets = info["shape"], info["data_offsets"]
        if len(shape) > MAX_RANK or not all(type(d) is int and d >= 0 for d in shape):
            raise _bad(path, f"entry {name[:100]!r} has shape {str(shape)[:100]}", error)
        if len(offsets) != 2 or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data_bytes:
            raise _bad(path, f"entry {name[:100]!r} has byte range {str(offsets)[:100]} outside the "
                             f"{data_bytes:,} bytes of data", error)
        if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
            raise _bad(path, f"entry {name[:100]!r} has shape {shape} of {info['dtype']} but "
                             f"{offsets[1] - offsets[0]:,} bytes", error)
        entries[name] = TensorEntry(dtype, tuple(shape))
        ranges.append((offsets[0], offsets[1], name))
    ranges.sort()
    for (_, end, first), (begin, _, second) in zip(ranges, ranges[1:]):
        if begin < end:
            raise _bad(path, f"entries {first[:100]!r} and {second[:100]!r} overlap", error)
    return Header(path, entries, metadata, size)


def read_tensors(header: Header, error: type[Exception] = CheckpointError) -> dict[str, torch.Tensor]:
    """The tensors of a file whose `Header` was read (and whose shapes the caller has accepted)."""
    import safetensors
    try:
        with safetensors.safe_open(os.fspath(header.path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in header.entries}
    except Exception as e:  # safetensors raises its own error types for a file changed or damaged since its header
        raise error(f"{header.path} is not a readable safetensors file ({str(e)[:200]})") from None


def read_pair(json_path: str | os.PathLike, weights_path: str | os.PathLike, format: str, version: int = 1,
              error: type[Exception] = CheckpointError) -> tuple[dict, Header]:
    """The JSON description (checked to be ``format`` ``version``) and the checked safetensors header of a pair
    written by `write_pair`; the two must carry the same ``weights_id``."""
    meta = read_json(json_path, error)
    if meta.get("format") != format:
        raise error(f"{json_path} is not a {format} description")
    if meta.get("version") != version:
        shown = meta.get("version")
        raise error(f"{json_path} has {format} version {str(shown)[:20]}; this code reads version {version}")
    header = read_header(weights_path, error)
    weights_id = meta.get("weights_id")
    if not isinstance(weights_id, str) or header.metadata.get("weights_id") != weights_id:
        raise error(f"{weights_path} and {json_path} come from different saves (interrupted save?); "
                    "save or convert again")
    return meta, header


def write_pair(stem: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict, format: str) -> str:
    """Write ``STEM.safetensors`` then ``STEM.json`` atomically, tied by a fresh ``weights_id``; return the stem
    (`stem` may end in either suffix).

    ``meta`` is the JSON description without ``format`` and ``weights_id``, which are added here.
    """
    import safetensors.torch
    stem = os.fspath(stem).removesuffix(".safetensors").removesuffix(".json")
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    weights_id = uuid.uuid4().hex
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    text = json.dumps({"format": format, **meta, "weights_id": weights_id}, indent=2) + "\n"  # fails before writing
    atomic_write(stem + ".safetensors", lambda tmp: safetensors.torch.save_file(
        tensors, tmp, metadata={"format": format, "weights_id": weights_id}))
    atomic_write_text(stem + ".json", text)
    return stem
