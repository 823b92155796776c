"""Network files: our ``NAME.safetensors`` + ``NAME.json`` format, and EDM pickles through `full.store.edm_pickle`.

``NAME.json`` holds ``{"format": "sid-network", "version": 1, "precond", "precond_kwargs", "architecture",
"resolution", "channels", "label_dim", "weights_id", "provenance"}``; ``precond_kwargs`` are the full
keyword arguments of the preconditioner (defaults filled in), so the network is rebuilt from the
registries in `full.nets.precond` without pickles. ``weights_id`` is also written into the safetensors
metadata, so a pair left mismatched by an interrupted save is detected. Both files are written
atomically (temporary file in the same directory, then ``os.replace``), the json last.
"""
from __future__ import annotations

import datetime
import inspect
import json
import os
import uuid

import safetensors
import safetensors.torch
import torch

from full.store.atomic import atomic_write
from full.store.edm_pickle import NetworkSpec, load_edm_pickle
from full.errors import CheckpointError
from full.nets.precond import PRECONDITIONERS

FORMAT = "sid-network"
VERSION = 1
_SUFFIXES = (".safetensors", ".json")


def build_network(precond: str, **kwargs) -> torch.nn.Module:
    """Construct ``PRECONDITIONERS[precond](**kwargs)``; keep the kwargs (defaults filled in) as ``net.init_kwargs``."""
    cls = PRECONDITIONERS.get(precond)
    if cls is None:
        raise CheckpointError(f"unknown preconditioner {precond!r}; known: {', '.join(sorted(PRECONDITIONERS))}")
    signature = inspect.signature(cls)
    try:
        bound = signature.bind(**kwargs)
    except TypeError as e:
        raise CheckpointError(f"bad arguments for {precond}: {e}") from None
    bound.apply_defaults()
    var_kw = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    resolved = {k: v for k, v in bound.arguments.items() if k not in var_kw}
    for name in var_kw:
        resolved.update(bound.arguments[name])
    try:
        net = cls(**resolved)
    except TypeError as e:
        raise CheckpointError(f"cannot build {precond} from the recorded arguments: {e}") from None
    net.precond_name, net.init_kwargs = precond, resolved
    return net


def instantiate(spec: NetworkSpec, source: str) -> torch.nn.Module:
    """Build the network a `NetworkSpec` describes and load its weights strictly, naming any mismatching key."""
    net = build_network(spec.precond, **spec.kwargs)
    expected, given = net.state_dict(), spec.state_dict
    hint = f"{source} does not match {spec.precond}({spec.kwargs.get('model_type', '')}) built from its own arguments"
    for key, value in expected.items():
        if key not in given:
            raise CheckpointError(f"{hint}: it lacks {key}")
        if given[key].shape != value.shape:
            raise CheckpointError(f"{hint}: {key} has shape {list(given[key].shape)}, expected {list(value.shape)}")
    for key in given:
        if key not in expected:
            raise CheckpointError(f"{hint}: unexpected entry {key}")
    net.load_state_dict(given, strict=True)
    net.provenance = spec.provenance
    return net


def _stem(path: str) -> str:
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _read_ours(stem: str) -> NetworkSpec:
    meta_path, weights_path = stem + ".json", stem + ".safetensors"
    for p in (meta_path, weights_path):
        if not os.path.isfile(p):
            raise CheckpointError(f"missing {p}; a {FORMAT} checkpoint is NAME.safetensors plus NAME.json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {meta_path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a {FORMAT} description; convert EDM pickles with "
                              "'python -m full.checkpoint convert'")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path} has {FORMAT} version {meta.get('version')!r}; this code reads "
                              f"version {VERSION}")
    if not isinstance(meta.get("precond"), str) or not isinstance(meta.get("precond_kwargs"), dict):
        raise CheckpointError(f"{meta_path} lacks 'precond' or 'precond_kwargs'")
    try:
        with safetensors.safe_open(weights_path, framework="pt") as f:
            weights_id = (f.metadata() or {}).get("weights_id")
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers or data
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({e})") from None
    if weights_id != meta.get("weights_id"):
        raise CheckpointError(f"{weights_path} and {meta_path} come from different saves (interrupted save?); "
                              "save or convert the network again")
    return NetworkSpec(meta["precond"], meta["precond_kwargs"], state_dict, meta.get("provenance", {}))


def read_spec(path: str | os.PathLike) -> NetworkSpec:
    """`NetworkSpec` from an EDM/SiD ``.pkl``, a ``.safetensors``/``.json`` of ours, or our stem."""
    path = os.fspath(path)
    if path.endswith(_SUFFIXES):
        return _read_ours(_stem(path))
    if os.path.isfile(path):
        return load_edm_pickle(path)
    if os.path.isfile(path + ".json"):
        return _read_ours(path)
    raise CheckpointError(f"no such file: {path} (give an EDM .pkl, NAME.safetensors or NAME.json, or the stem NAME)")


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Ready-to-call preconditioned network from either format: eval mode, frozen, on ``device``.
    ``path`` may also be a URL (http, https or file), downloaded once into the cache (`full.store.download`)."""
    from full.store.download import fetch, is_url
    path = os.fspath(path)
    if is_url(path) and not path.endswith(".pkl"):
        stem = path.rsplit(".", 1)[0] if path.endswith(_SUFFIXES) else path
        fetch(stem + ".safetensors")
        path = fetch(stem + ".json")
    path = fetch(os.fspath(path))
    net = instantiate(read_spec(path), os.fspath(path))
    return net.eval().requires_grad_(False).to(device)


def save_network(net: torch.nn.Module, path: str | os.PathLike, provenance: dict | None = None) -> str:
    """Write ``STEM.safetensors`` then ``STEM.json`` atomically; return the stem. ``net`` must come from
    `build_network` or `load_network` (it carries ``precond_name`` and ``init_kwargs``)."""
    stem = _stem(os.fspath(path))
    precond, kwargs = getattr(net, "precond_name", None), getattr(net, "init_kwargs", None)
    if precond is None or kwargs is None:
        raise CheckpointError("the network has no recorded constructor arguments; create it with "
                              "full.checkpoint.build_network or load it with load_network")
    weights_id = uuid.uuid4().hex
    state_dict = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {
        "format": FORMAT, "version": VERSION, "precond": precond, "precond_kwargs": kwargs,
        "architecture": kwargs.get("model_type"), "resolution": kwargs.get("img_resolution"),
        "channels": kwargs.get("img_channels"), "label_dim": kwargs.get("label_dim"), "weights_id": weights_id,
        "provenance": {**getattr(net, "provenance", {}), **(provenance or {}),
                       "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    text = json.dumps(meta, indent=2) + "\n"

    def write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(stem + ".safetensors", lambda tmp: safetensors.torch.save_file(
        state_dict, tmp, metadata={"format": FORMAT, "weights_id": weights_id}))
    atomic_write(stem + ".json", write_json)
    return stem


def inspect_network(path: str | os.PathLike) -> dict:
    """Architecture, preconditioner, sizes, parameter count and provenance of a network file."""
    net = load_network(path)
    kwargs = net.init_kwargs
    return {
        "file": os.fspath(path), "preconditioner": net.precond_name, "architecture": kwargs.get("model_type"),
        "resolution": kwargs.get("img_resolution"), "channels": kwargs.get("img_channels"),
        "label_dim": kwargs.get("label_dim"), "parameters": sum(p.numel() for p in net.parameters()),
        "state_dict_entries": len(net.state_dict()), "provenance": net.provenance,
    }
