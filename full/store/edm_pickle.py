"""Safe import of EDM network pickles (``edm-*.pkl``, SiD ``network-snapshot-*.pkl``).

EDM pickles store every network class with ``torch_utils.persistence``: an instance is written as
``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``,
and loading it with `pickle` would ``exec(module_src)``, i.e. run code shipped inside the file.
This module never does that. A whitelisting unpickler admits only the globals such files need
(tensor and storage rebuilders, ``OrderedDict``, numpy scalars, ``ModuleDict``); persistent objects
become inert `PersistentRecord`s holding ``class_name`` and ``state``; ``ModuleDict`` becomes a stub
that keeps its ``__dict__``. The records are flattened into a ``state_dict`` exactly as
``nn.Module.state_dict()`` would (parameters, persistent buffers, then children as ``name.``), and the
constructor kwargs come from ``state['_init_kwargs']``. Building our own class from them is left to
`full.checkpoint`.
"""
from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch._utils

from full.errors import CheckpointError

try:  # numpy >= 2 writes numpy._core, numpy 1.x writes numpy.core; both name the same function
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _np_scalar


@dataclass
class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` would have built, kept as data: no code is run."""

    class_name: str
    state: dict


class _ModuleDictStub:
    """Stands in for ``torch.nn.ModuleDict`` (pickled as NEWOBJ + BUILD); keeps the BUILD state."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


@dataclass
class NetworkSpec:
    """Everything needed to rebuild a preconditioned network, independent of the file format."""

    precond: str
    kwargs: dict
    state_dict: dict[str, torch.Tensor]
    provenance: dict = field(default_factory=dict)


def _capture_persistent(meta: Any) -> PersistentRecord:
    if not (isinstance(meta, dict) and meta.get("type") == "class"
            and isinstance(meta.get("class_name"), str) and isinstance(meta.get("state"), dict)):
        raise CheckpointError("malformed torch_utils.persistence record; the file is not an EDM network pickle")
    return PersistentRecord(meta["class_name"], meta["state"])


def _storage_from_bytes(data: bytes):
    """``torch.storage._load_from_bytes`` without its ``weights_only=False``: the bytes are a legacy torch.save."""
    if not isinstance(data, bytes):
        raise CheckpointError("malformed tensor storage; the file is not an EDM network pickle")
    return torch.load(io.BytesIO(data), weights_only=True)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _capture_persistent,
    ("torch.nn.modules.container", "ModuleDict"): _ModuleDictStub,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "dtype"): np.dtype,
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the whitelisted globals above; anything else is refused before it can be called."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused global {module}.{name}: EDM network pickles never need it, so the file is "
                "either not an EDM network pickle or malicious; nothing from it was run") from None


def read_edm_pickle(path: str | os.PathLike) -> dict:
    """Safely unpickle an EDM/SiD network pickle; return its top-level dict (with ``'ema'``) of inert records."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated")
            top = _SafeUnpickler(f).load()
    except CheckpointError:
        raise
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # any parse failure of untrusted bytes is a corrupt file, not a bug
        raise CheckpointError(f"{path} is not a readable EDM network pickle ({type(e).__name__}: {e}); "
                              "re-download it or check that it is the .pkl EDM/SiD wrote") from None
    if not isinstance(top, dict) or "ema" not in top:
        raise CheckpointError(f"{path} has no 'ema' entry; expected the dict EDM/SiD training writes "
                              "(e.g. edm-*.pkl or network-snapshot-*.pkl)")
    return top


def _module_state(node: Any, where: str) -> dict:
    state = getattr(node, "state", None)
    if not (isinstance(state, dict) and all(isinstance(state.get(k), dict)
                                            for k in ("_parameters", "_buffers", "_modules"))):
        raise CheckpointError(f"'{where or 'ema'}' is not a torch module in the pickle; "
                              "expected an EDM network under 'ema'")
    return state


def flatten_state_dict(node: PersistentRecord | _ModuleDictStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict()`` of a captured module: own parameters, persistent buffers, then children, in order."""
    state = _module_state(node, prefix.rstrip("."))
    out: dict[str, torch.Tensor] = {}
    non_persistent = state.get("_non_persistent_buffers_set", set())
    tensors = list(state["_parameters"].items())
    tensors += [(k, v) for k, v in state["_buffers"].items() if k not in non_persistent]
    for name, value in tensors:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry {prefix}{name} of the pickle is not a tensor")
        out[prefix + name] = value.detach()
    for name, child in state["_modules"].items():
        if child is not None:
            out.update(flatten_state_dict(child, f"{prefix}{name}."))
    return out


def _to_python(value: Any, key: str) -> Any:
    """Constructor kwargs as plain Python (EDM stores some as numpy scalars)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_python(v, key) for v in value)
    if isinstance(value, dict):
        return {k: _to_python(v, f"{key}.{k}") for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"constructor argument {key} has unsupported type {type(value).__name__}")


def network_spec(record: Any) -> NetworkSpec:
    """Preconditioner class name, constructor kwargs and state_dict of the captured ``'ema'`` network."""
    if not isinstance(record, PersistentRecord):
        raise CheckpointError("'ema' is not an EDM persistent network; expected an EDM/SiD network pickle")
    args, kwargs = record.state.get("_init_args"), record.state.get("_init_kwargs")
    if args or not isinstance(kwargs, dict):
        raise CheckpointError(f"{record.class_name} in the pickle does not record keyword-only constructor "
                              "arguments (_init_args/_init_kwargs); expected a network saved by EDM/SiD training")
    kwargs = {k: _to_python(v, k) for k, v in kwargs.items()}
    return NetworkSpec(record.class_name, kwargs, flatten_state_dict(record))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_edm_pickle(path: str | os.PathLike) -> NetworkSpec:
    """`NetworkSpec` of the ``'ema'`` network in an EDM/SiD pickle, with provenance (file, sha256, kimg, dataset)."""
    path = os.path.abspath(os.fspath(path))
    top = read_edm_pickle(path)
    spec = network_spec(top["ema"])
    spec.provenance = {"source": path, "sha256": _sha256(path), "source_format": "edm-pickle"}
    kimg = re.search(r"network-snapshot-(\d+)\.pkl$", path)
    if kimg:
        spec.provenance["kimg"] = int(kimg.group(1))
    if isinstance(top.get("dataset_kwargs"), dict):
        try:
            spec.provenance["dataset_kwargs"] = _to_python(top["dataset_kwargs"], "dataset_kwargs")
        except CheckpointError:
            pass  # provenance is informative only; an exotic dataset entry must not block the import
    return spec
