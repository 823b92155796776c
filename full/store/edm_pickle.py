"""Safe import of EDM, EDM2 and SiD network pickles (``edm-*.pkl``, ``edm2-img*.pkl``, ``network-snapshot-*.pkl``).

These pickles store every network class with ``torch_utils.persistence``: an instance is written as
``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``, and
loading it with `pickle` would ``exec(module_src)``, i.e. run code shipped inside the file. This module never
does that. A whitelisting unpickler admits only the globals such files need, each replaced by an inert
stand-in that checks its arguments:

- tensors and storages (``torch._utils._rebuild_tensor_v2`` within the bounds of their storage,
  ``_rebuild_parameter*`` without hooks or attributes, ``torch.storage._load_from_bytes`` through
  ``torch.load(weights_only=True)``);
- ``collections.OrderedDict``; ``torch.nn.ModuleDict`` (a stub keeping its state);
- numpy scalars, dtypes and arrays (``numpy.(_)core.multiarray.scalar`` / ``_reconstruct``, ``numpy.dtype``,
  ``numpy.ndarray``), rebuilt from their bytes for plain numeric dtypes only;
- EDM2's top level ``dnnlib.util.EasyDict`` (a plain dict here);
- persistent objects, which become `PersistentRecord`s holding ``class_name`` and ``state``.

EDM and SiD files are a dict with ``ema`` (and ``loss_fn``, ``augment_pipe``, ``dataset_kwargs``). EDM2's
(NVlabs/edm2 ``training/training_loop.py``) are an ``EasyDict`` with ``encoder`` (``StandardRGBEncoder`` or
``StabilityVAEEncoder``), ``dataset_kwargs``, ``loss_fn`` (``EDM2Loss``) and ``ema``, EDM2's ``Precond`` stored
in float16; its class name maps to our `full.nets.edm2.EDM2Precond`.

Walking the result is bounded: the module tree visits each record once and refuses shared or cyclic
submodules, depth beyond `MAX_MODULE_DEPTH` and more than `MAX_MODULES` modules or `MAX_TENSORS` tensors;
plain data (constructor kwargs, dataset kwargs) is converted with memoisation by id, refusing cycles, depth
beyond `MAX_DEPTH` and an expanded size beyond `MAX_VALUES` (a graph of shared references). The ``ema``
record is flattened into a ``state_dict`` exactly as ``nn.Module.state_dict()`` would (parameters, persistent
buffers, then children as ``name.``); the constructor kwargs come from ``state['_init_kwargs']``. Building
our class from them is left to `full.store.network_file`.
"""
from __future__ import annotations

import collections
import hashlib
import io
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch._utils

from full.errors import CheckpointError
from full.store.safe_build import check_encoder, name_shown, shown

MAX_MODULES = 100_000           # module records in one network; EDM2-XXL has about 1,000
MAX_TENSORS = 200_000
MAX_MODULE_DEPTH = 64
MAX_VALUES = 10_000             # values in one piece of plain data (constructor or dataset kwargs)
MAX_DEPTH = 32
MAX_ARRAY = 4096                # elements of a numpy array inside plain data
MAX_RANK = 8

# EDM2 names its preconditioner ``Precond``; ours is EDM2Precond.
CLASS_NAMES = {"Precond": "EDM2Precond"}


@dataclass(repr=False)
class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` would have built, kept as data: no code is run."""

    class_name: str
    state: dict

    def __repr__(self) -> str:  # bounded: the state may be a huge graph of shared references
        return f"PersistentRecord({shown(self.class_name)}, {len(self.state)} state entries)"


class _ModuleDictStub:
    """Stands in for ``torch.nn.ModuleDict`` (pickled as NEWOBJ + BUILD); keeps the BUILD state."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict``: EDM2's top-level dict (NEWOBJ + SETITEMS); no attributes."""

    def __repr__(self) -> str:  # bounded, like PersistentRecord's
        return f"EasyDict({len(self)} entries)"

    def __setstate__(self, state: Any) -> None:
        if state not in (None, {}):
            raise CheckpointError("an EasyDict in the pickle carries attributes; EDM2 never writes them")


class NumpyDtype:
    """``numpy.dtype(code, align, copy)`` followed by ``__setstate__``, for plain numeric dtypes only."""

    def __init__(self, code: Any = None, align: Any = False, copy: Any = True):
        if not (isinstance(code, str) and re.fullmatch(r"[biufc][0-9]{1,2}", code)):
            raise CheckpointError(f"refused numpy dtype {shown(code)}: only plain numeric dtypes are read")
        try:
            self.dtype = np.dtype(code)
        except TypeError:
            raise CheckpointError(f"refused numpy dtype {shown(code)}") from None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and all(s is None for s in state[2:5])):
            raise CheckpointError("refused a numpy dtype with fields, a subarray or an unknown byte order")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class NumpyArray:
    """``numpy.core.multiarray._reconstruct(ndarray, ...)`` followed by ``__setstate__``: the array is rebuilt
    from its raw bytes (``self.array``), never from pickled objects."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], NumpyDtype)
                and isinstance(state[1], tuple) and len(state[1]) <= MAX_RANK
                and all(type(d) is int and d >= 0 for d in state[1]) and isinstance(state[4], bytes)):
            raise CheckpointError("refused a numpy array that is not plain numeric data")
        shape, dtype, data = state[1], state[2].dtype, state[4]
        if math.prod(shape) * dtype.itemsize != len(data):
            raise CheckpointError(f"a numpy array in the pickle claims shape {shape} but holds {len(data)} bytes")
        order = "F" if state[3] is True else "C"
        self.array = np.frombuffer(data, dtype).reshape(shape, order=order).copy()


def _reconstruct_array(cls: Any, shape: Any = (0,), code: Any = b"b") -> NumpyArray:
    if cls is not NumpyArray:
        raise CheckpointError("refused numpy _reconstruct of anything but ndarray")
    return NumpyArray()


def _numpy_scalar(dtype: Any, data: Any = None):
    if not isinstance(dtype, NumpyDtype) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise CheckpointError("refused a numpy scalar that is not plain numeric data")
    return np.frombuffer(data, dtype.dtype)[0]


def _capture_persistent(meta: Any) -> PersistentRecord:
    if not (isinstance(meta, dict) and meta.get("type") == "class"
            and isinstance(meta.get("class_name"), str) and isinstance(meta.get("state"), dict)):
        raise CheckpointError("malformed torch_utils.persistence record; the file is not an EDM network pickle")
    return PersistentRecord(meta["class_name"], meta["state"])


def _storage_from_bytes(data: Any):
    """``torch.storage._load_from_bytes`` without its ``weights_only=False``: the bytes are a legacy torch.save."""
    if not isinstance(data, bytes):
        raise CheckpointError("malformed tensor storage; the file is not an EDM network pickle")
    storage = torch.load(io.BytesIO(data), weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError("a tensor storage in the pickle holds something else")
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """``_rebuild_tensor_v2`` for a tensor that lies within its storage (no hooks, no metadata)."""
    ints = lambda xs: isinstance(xs, tuple) and len(xs) <= MAX_RANK and all(type(x) is int and x >= 0 for x in xs)
    if not (isinstance(storage, torch.storage.TypedStorage) and type(offset) is int and offset >= 0
            and ints(size) and ints(stride) and len(size) == len(stride) and not metadata):
        raise CheckpointError("malformed tensor in the pickle")
    numel, available = math.prod(size), storage._untyped_storage.nbytes() // torch._utils._element_size(storage.dtype)
    if numel and (offset + sum((n - 1) * s for n, s in zip(size, stride)) >= available or numel > available - offset):
        raise CheckpointError(f"a tensor of shape {list(size)} in the pickle reaches beyond its storage of "
                              f"{available:,} elements")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None, state: Any = None) -> torch.Tensor:
    """``_rebuild_parameter(_with_state)`` as the bare tensor: hooks and attributes are dropped."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointError("malformed parameter in the pickle")
    return data


# numpy arrays, dtypes and scalars as inert stand-ins rebuilt from their bytes (EDM2's pickles and reference statistics)
NUMPY_GLOBALS = {
    ("numpy", "dtype"): NumpyDtype,
    ("numpy", "ndarray"): NumpyArray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,       # numpy 1.x writes numpy.core,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,      # numpy 2 writes numpy._core
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
}

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _capture_persistent,
    ("torch.nn.modules.container", "ModuleDict"): _ModuleDictStub,
    ("dnnlib.util", "EasyDict"): EasyDict,
    **NUMPY_GLOBALS,
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the whitelisted globals above; anything else is refused before it can be called."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"refused global {shown(module)[1:-1]}.{shown(name)[1:-1]}: EDM network pickles never need it, "
                "so the file is either not an EDM network pickle or malicious; nothing from it was run") from None


@dataclass
class NetworkSpec:
    """Everything needed to rebuild a network, independent of the file format.

    ``entries`` maps each tensor name to (dtype, shape), known before any tensor data is read (for our pairs,
    from the safetensors header); ``read_tensors()`` returns the tensors. ``kwargs_field`` says where the
    kwargs sit in the file (for messages); ``file_bytes`` is the size of the file holding the tensors.
    """

    precond: str
    kwargs: dict
    entries: dict[str, tuple[torch.dtype, tuple[int, ...]]]
    read_tensors: Callable[[], dict[str, torch.Tensor]]
    provenance: dict = field(default_factory=dict)
    encoder: dict | None = None
    source: str = ""
    file_bytes: int = 0
    kwargs_field: str = "_init_kwargs"

    @classmethod
    def from_tensors(cls, precond: str, kwargs: dict, tensors: dict[str, torch.Tensor], **rest) -> NetworkSpec:
        entries = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
        return cls(precond, kwargs, entries, lambda: dict(tensors), **rest)


def read_edm_pickle(path: str | os.PathLike) -> dict:
    """Safely unpickle an EDM/EDM2/SiD network pickle; return its top-level dict (with ``'ema'``) of inert records."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated")
            top = _SafeUnpickler(f).load()
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # any parse failure of untrusted bytes (incl. MemoryError, RecursionError) is a bad file
        raise CheckpointError(f"{path} is not a readable EDM network pickle ({type(e).__name__}: {str(e)[:200]}); "
                              "re-download it or check that it is the .pkl EDM/EDM2/SiD wrote") from None
    if not isinstance(top, dict) or "ema" not in top:
        raise CheckpointError(f"{path} has no 'ema' entry; expected the dict EDM/EDM2/SiD training writes "
                              "(e.g. edm-*.pkl, edm2-img*.pkl or network-snapshot-*.pkl)")
    return dict(top)


def _module_state(node: Any, where: str) -> dict:
    state = getattr(node, "state", None)
    if not (isinstance(node, (PersistentRecord, _ModuleDictStub)) and isinstance(state, dict)
            and all(isinstance(state.get(k), dict) for k in ("_parameters", "_buffers", "_modules"))):
        raise CheckpointError(f"'{where or 'ema'}' is not a torch module in the pickle; "
                              "expected an EDM network under 'ema'")
    return state


def flatten_state_dict(node: PersistentRecord | _ModuleDictStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict()`` of a captured module: own parameters, persistent buffers, then children, in order.

    Each module record is visited once: shared or cyclic submodules, depth beyond `MAX_MODULE_DEPTH` and more
    than `MAX_MODULES` modules or `MAX_TENSORS` tensors are refused.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    active: set[int] = set()

    def visit(node: Any, prefix: str, depth: int) -> None:
        where = prefix.rstrip(".") or "ema"
        if depth > MAX_MODULE_DEPTH:
            raise CheckpointError(f"the module tree in the pickle is deeper than {MAX_MODULE_DEPTH} levels at "
                                  f"{name_shown(where)}; not an EDM network")
        if id(node) in active:
            raise CheckpointError(f"the module tree in the pickle loops back on itself at {name_shown(where)}")
        if id(node) in seen:
            raise CheckpointError(f"module {name_shown(where)} in the pickle is also used elsewhere (shared submodule); "
                                  "EDM networks have none")
        seen.add(id(node))
        if len(seen) > MAX_MODULES:
            raise CheckpointError(f"the pickle holds more than {MAX_MODULES:,} modules; not an EDM network")
        state = _module_state(node, prefix.rstrip("."))
        non_persistent = state.get("_non_persistent_buffers_set", set())
        if not (isinstance(non_persistent, (set, frozenset)) and all(isinstance(k, str) for k in non_persistent)):
            raise CheckpointError(f"{name_shown(where)} in the pickle has a malformed _non_persistent_buffers_set")
        tensors = list(state["_parameters"].items())
        tensors += [(k, v) for k, v in state["_buffers"].items() if k not in non_persistent]
        for name, value in tensors:
            if value is None:
                continue
            if not isinstance(name, str):
                raise CheckpointError(f"{name_shown(where)} in the pickle has a tensor name that is not a string")
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"entry {name_shown(prefix + name)} of the pickle is not a tensor")
            out[prefix + name] = value.detach()
            if len(out) > MAX_TENSORS:
                raise CheckpointError(f"the pickle holds more than {MAX_TENSORS:,} tensors; not an EDM network")
        active.add(id(node))
        for name, child in state["_modules"].items():
            if not isinstance(name, str):
                raise CheckpointError(f"{name_shown(where)} in the pickle has a child name that is not a string")
            if child is not None:
                visit(child, f"{prefix}{name}.", depth + 1)
        active.discard(id(node))

    visit(node, prefix, 0)
    return out


def plain_data(value: Any, where: str) -> Any:
    """Pickled data as plain Python (dict, list, tuple, str, numbers, None), with bounded work.

    numpy scalars become numbers and small numpy arrays lists. Each container is converted once (memoised by
    id); a cycle, nesting beyond `MAX_DEPTH` or more than `MAX_VALUES` values once shared references are
    expanded is refused, as is any other type. ``where`` names the data in messages.
    """
    memo: dict[int, tuple[Any, int]] = {}
    active: set[int] = set()

    def walk(v: Any, key: str, depth: int) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{key} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, np.generic):  # before float: numpy.float64 is a float subclass
            return v.item(), 1
        if v is None or isinstance(v, (bool, int, float, str)):
            return v, 1
        if isinstance(v, NumpyArray):
            if v.array is None or v.array.size > MAX_ARRAY:
                raise CheckpointError(f"{key} is a numpy array of more than {MAX_ARRAY} values")
            return v.array.tolist(), 1 + v.array.size
        if not isinstance(v, (list, tuple, dict)):
            raise CheckpointError(f"{key} has unsupported type {type(v).__name__}")
        if id(v) in active:
            raise CheckpointError(f"{key} contains itself (a reference cycle)")
        if id(v) in memo:
            return memo[id(v)]
        active.add(id(v))
        total, items = 1, []
        pairs = v.items() if isinstance(v, dict) else enumerate(v)
        for k, child in pairs:
            if isinstance(v, dict) and not isinstance(k, str):
                raise CheckpointError(f"{key} has a key that is not a string")
            converted, size = walk(child, f"{key}.{k}" if isinstance(v, dict) else f"{key}[{k}]", depth + 1)
            total += size
            if total > MAX_VALUES:
                raise CheckpointError(f"{key} expands to more than {MAX_VALUES:,} values (a graph of shared "
                                      "references?); not what EDM writes")
            items.append((k, converted))
        active.discard(id(v))
        result = dict(items) if isinstance(v, dict) else type(v)(c for _, c in items)
        memo[id(v)] = (result, total)
        return result, total

    return walk(value, where, 0)[0]


def network_spec(record: Any, source: str = "the pickle") -> NetworkSpec:
    """Class name, constructor kwargs and state_dict of the captured ``'ema'`` network."""
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"{source}: 'ema' is not an EDM persistent network; expected an EDM/EDM2/SiD "
                              "network pickle")
    args, kwargs = record.state.get("_init_args"), record.state.get("_init_kwargs")
    if args or not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: {shown(record.class_name)} does not record keyword-only constructor "
                              "arguments (_init_args/_init_kwargs); expected a network saved by EDM/EDM2/SiD training")
    try:
        kwargs = plain_data(kwargs, "_init_kwargs")
        tensors = flatten_state_dict(record)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    name = CLASS_NAMES.get(record.class_name, record.class_name)
    return NetworkSpec.from_tensors(name, kwargs, tensors, source=source)


def encoder_spec(record: Any, source: str) -> dict | None:
    """EDM2's ``encoder`` entry as plain data: ``{"kind": "StandardRGBEncoder"}`` or ``{"kind":
    "StabilityVAEEncoder", "vae_name", "scale", "bias", "batch_size"}`` (NVlabs/edm2 ``training/encoders.py``)."""
    if record is None:
        return None
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"{source}: 'encoder' is not an EDM2 encoder object")
    if record.class_name == "StandardRGBEncoder":
        return check_encoder({"kind": record.class_name}, source, "encoder")
    if record.class_name != "StabilityVAEEncoder":
        raise CheckpointError(f"{source}: unknown encoder {shown(record.class_name)}; EDM2 writes "
                              "StandardRGBEncoder or StabilityVAEEncoder")
    state = record.state
    try:
        fields = {k: plain_data(state.get(k), f"encoder.{k}") for k in ("vae_name", "scale", "bias", "batch_size")}
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    for key in ("scale", "bias"):  # one value per latent channel; a scalar stands for one channel
        if isinstance(fields[key], (int, float)):
            fields[key] = [fields[key]]
    return check_encoder({"kind": record.class_name, **fields}, source, "encoder")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _optional(value: Any, where: str) -> Any:
    """Plain data for provenance, or None when the file holds something exotic there (it is informative only)."""
    try:
        return plain_data(value, where)
    except CheckpointError:
        return None


def load_edm_pickle(path: str | os.PathLike) -> NetworkSpec:
    """`NetworkSpec` of the ``'ema'`` network of an EDM/EDM2/SiD pickle, with its provenance (file, sha256,
    kimg, dataset and loss kwargs) and, for EDM2, the encoder."""
    path = os.path.abspath(os.fspath(path))
    top = read_edm_pickle(path)
    spec = network_spec(top["ema"], path)
    edm2 = "encoder" in top
    spec.encoder = encoder_spec(top.get("encoder"), path)
    spec.file_bytes = os.path.getsize(path)
    spec.provenance = {"source": path, "sha256": _sha256(path), "source_format": "edm2-pickle" if edm2 else "edm-pickle"}
    name = os.path.basename(path)
    snapshot = re.search(r"network-snapshot-(\d+)\.pkl$", name)
    posthoc = re.search(r"-(\d{7})-(\d+\.\d+)\.pkl$", name)  # EDM2: PREFIX-KIMG-EMASTD.pkl
    if snapshot:
        spec.provenance["kimg"] = int(snapshot.group(1))
    elif posthoc:
        spec.provenance.update(kimg=int(posthoc.group(1)), ema_std=float(posthoc.group(2)))
    dataset = _optional(top.get("dataset_kwargs"), "dataset_kwargs")
    if isinstance(dataset, dict):
        spec.provenance["dataset_kwargs"] = dataset
    loss = top.get("loss_fn")
    if isinstance(loss, PersistentRecord):
        fields = {k: v for k, v in loss.state.items() if isinstance(k, str) and not k.startswith("_")}
        values = _optional(fields, "loss_fn")
        if isinstance(values, dict):
            spec.provenance["loss_fn"] = {"class_name": loss.class_name, **values}
    return spec
