"""Network files: our ``NAME.safetensors`` + ``NAME.json`` pair, and EDM/EDM2/SiD pickles through `full.store.edm_pickle`.

``NAME.json`` holds ``{"format": "sid-network", "version": 1, "precond", "precond_kwargs", "architecture",
"resolution", "channels", "label_dim", "encoder", "weights_id", "provenance"}``; ``precond_kwargs`` are the
full keyword arguments of the network class (defaults filled in), so the network is rebuilt from the
registry `full.nets.NETWORKS` without pickles. ``encoder`` is null for EDM networks and EDM2's
encoder as data for EDM2 ones (`full.store.safe_build.check_encoder`). The pair is written and tied by
`full.store.pair` (safetensors first, JSON last, a shared ``weights_id``).

Loading goes through one resolver (`full.store.resolve.locate`: path or URL, pair or pickle) and never
trusts the file: the arguments are checked, the network is built on the meta device and compared with the
tensors in the file before anything is allocated (`full.store.safe_build`). Weights stored in float16 (EDM2's
release pickles) are loaded as float32; ``net.stored_dtype`` records what the file held.
"""
from __future__ import annotations

import datetime
import os

import torch

from full.errors import CheckpointError
from full.nets import NETWORKS
from full.store.edm_pickle import NetworkSpec, load_edm_pickle
from full.store.pair import read_pair, read_tensors, write_pair
from full.store.resolve import PAIR, Location, locate
from full.store.safe_build import (RULES, build_on_meta, check_encoder, check_kwargs, materialize, resolve_kwargs,
                                   shown, unknown_network)

FORMAT = "sid-network"
VERSION = 1


def build_network(precond: str, **kwargs) -> torch.nn.Module:
    """Construct ``NETWORKS[precond](**kwargs)`` for real (our own code's arguments); keep the kwargs (defaults
    filled in) as ``net.init_kwargs``. Arguments read from a file go through `instantiate` instead."""
    cls, resolved = resolve_kwargs(precond, kwargs)
    try:
        net = cls(**resolved)
    except TypeError as e:
        raise CheckpointError(f"cannot build {precond} from the recorded arguments: {e}") from None
    net.precond_name, net.init_kwargs = precond, resolved
    return net


def architecture(precond: str, kwargs: dict) -> str | None:
    """The inner U-Net's name: ``model_type`` for EDM's wrappers, ``EDM2UNet`` for EDM2's."""
    return "EDM2UNet" if precond == "EDM2Precond" else kwargs.get("model_type")


def _dtype_names(spec: NetworkSpec) -> str:
    return ", ".join(sorted({str(dtype).removeprefix("torch.") for dtype, _ in spec.entries.values()})) or "none"


def instantiate(spec: NetworkSpec, source: str | None = None) -> torch.nn.Module:
    """Build the network a `NetworkSpec` read from a file describes: check its arguments, build it on the meta
    device, compare names, shapes and sizes with the file's tensors, then load them (cast to float32)."""
    source = source or spec.source
    net, resolved = build_on_meta(spec.precond, spec.kwargs, source, spec.kwargs_field)
    hint = f"{source} does not match {spec.precond}({architecture(spec.precond, resolved) or ''}) built from its own arguments"
    materialize(net, spec.entries, spec.read_tensors, spec.file_bytes, hint)
    net.precond_name, net.init_kwargs = spec.precond, resolved
    net.provenance = spec.provenance
    net.encoder = spec.encoder
    net.stored_dtype = _dtype_names(spec)
    return net


def _check_summary(meta: dict, kwargs: dict, source: str) -> None:
    """The informative top-level fields of our JSON must agree with the kwargs they summarise."""
    for key, kwarg in (("resolution", "img_resolution"), ("channels", "img_channels"), ("label_dim", "label_dim")):
        if key in meta and meta[key] is not None:
            if not RULES[kwarg].accepts(meta[key]):
                raise CheckpointError(f"{source}: {key} is {shown(meta[key])}; expected {RULES[kwarg].describe()}")
            if kwarg in kwargs and kwargs[kwarg] != meta[key]:
                raise CheckpointError(f"{source}: {key} is {shown(meta[key])} but precond_kwargs.{kwarg} is "
                                      f"{shown(kwargs[kwarg])}; the file was edited or damaged")
    if meta.get("architecture") is not None and not isinstance(meta["architecture"], str):
        raise CheckpointError(f"{source}: architecture is {shown(meta['architecture'])}; expected a name")


def _read_ours(json_path: str | os.PathLike, weights_path: str | os.PathLike) -> NetworkSpec:
    meta, header = read_pair(json_path, weights_path, FORMAT, VERSION)
    source = os.fspath(json_path)
    precond, kwargs = meta.get("precond"), meta.get("precond_kwargs")
    if not isinstance(precond, str) or not isinstance(kwargs, dict):
        raise CheckpointError(f"{source} lacks 'precond' or 'precond_kwargs'")
    if precond not in NETWORKS:
        raise CheckpointError(f"{source}: {unknown_network(precond)}")
    check_kwargs(precond, kwargs, source, "precond_kwargs")
    _check_summary(meta, kwargs, source)
    provenance = meta.get("provenance", {})
    if not isinstance(provenance, dict):
        raise CheckpointError(f"{source}: provenance is {shown(provenance)}; expected an object")
    return NetworkSpec(precond, kwargs, header.entries,
                       lambda: read_tensors(header), provenance, check_encoder(meta.get("encoder"), source, "encoder"),
                       source=source, file_bytes=header.file_bytes, kwargs_field="precond_kwargs")


def _spec_at(found: Location) -> NetworkSpec:
    if found.kind == PAIR:
        return _read_ours(found.path, found.weights)
    return load_edm_pickle(found.path)


def read_spec(location: str | os.PathLike, what: str = "network") -> NetworkSpec:
    """`NetworkSpec` from an EDM/EDM2/SiD ``.pkl``, our ``.safetensors``/``.json`` or stem, or a URL of either."""
    return _spec_at(locate(location, what))


def load_network(location: str | os.PathLike, device: str | torch.device = "cpu", *,
                 what: str = "network") -> torch.nn.Module:
    """Ready-to-call network from a path or URL of either format: eval mode, frozen, float32, on ``device``.

    ``what`` names the option the location came from (e.g. ``"--teacher"``) in every error message. A URL
    (http, https or file) is downloaded once into the cache (`full.store.resolve`). The network carries
    ``precond_name``, ``init_kwargs``, ``provenance``, ``encoder`` (None, or EDM2's encoder as a dict) and
    ``stored_dtype`` (the file's tensor dtype, e.g. ``float16`` for EDM2's releases).
    """
    net = instantiate(read_spec(location, what))
    return net.eval().requires_grad_(False).to(device)


def save_network(net: torch.nn.Module, path: str | os.PathLike, provenance: dict | None = None) -> str:
    """Write ``STEM.safetensors`` then ``STEM.json`` atomically; return the stem. ``net`` must come from
    `build_network` or `load_network` (it carries ``precond_name`` and ``init_kwargs``)."""
    precond, kwargs = getattr(net, "precond_name", None), getattr(net, "init_kwargs", None)
    if precond is None or kwargs is None:
        raise CheckpointError("the network has no recorded constructor arguments; create it with "
                              "full.store.network_file.build_network or load it with load_network")
    meta = {
        "version": VERSION, "precond": precond, "precond_kwargs": kwargs,
        "architecture": architecture(precond, kwargs), "resolution": kwargs.get("img_resolution"),
        "channels": kwargs.get("img_channels"), "label_dim": kwargs.get("label_dim"),
        "encoder": getattr(net, "encoder", None),
        "provenance": {**getattr(net, "provenance", {}), **(provenance or {}),
                       "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    return write_pair(path, net.state_dict(), meta, FORMAT)


def inspect_network(location: str | os.PathLike, what: str = "network") -> dict:
    """Architecture, preconditioner, sizes, parameter count, dtype, encoder and provenance of a network file."""
    spec = read_spec(location, what)
    net = instantiate(spec)
    kwargs = net.init_kwargs
    stored = net.stored_dtype
    return {
        "file": os.fspath(location), "preconditioner": net.precond_name,
        "architecture": architecture(net.precond_name, kwargs), "resolution": kwargs.get("img_resolution"),
        "channels": kwargs.get("img_channels"), "label_dim": kwargs.get("label_dim"),
        "parameters": sum(p.numel() for p in net.parameters()), "state_dict_entries": len(net.state_dict()),
        "dtype": stored if stored == "float32" else f"stored {stored}, loaded as float32",
        "encoder": net.encoder, "provenance": net.provenance,
    }
