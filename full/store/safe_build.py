"""Build a network from what a file says, with bounded work and memory, or refuse in one line.

A network file (EDM pickle, our pair) names a class and its constructor arguments; both are untrusted. Before
anything is allocated:

1. `check_kwargs`: every argument must be one the class (and, for EDM's wrappers, the chosen U-Net; for EDM2,
   its U-Net and blocks) accepts, of the right type and within sane limits (`RULES`: e.g. ``model_channels``
   at most 4096, at most 8 resolution levels of at most 12 blocks), so that building the network on the meta
   device takes at most a few seconds whatever the file says.
2. The network is built on the meta device (``with torch.device("meta")``): parameter names and shapes, no
   memory. A constructor error here (bad combination of arguments) is one line naming the file.
3. `materialize`: the names, shapes and dtypes must equal the tensors the file holds (read from the pickle or
   from the safetensors header before any data), the network must not exceed `MAX_PARAMETERS`, and its fp32
   size must not exceed twice the file's size (a file cannot describe more weights than it stores, fp16
   included). Only then are the file's tensors read and assigned, cast to the network's dtype (float32).
"""
from __future__ import annotations

import inspect
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from full.errors import CheckpointError
from full.nets.edm import ARCHITECTURES
from full.nets.edm2 import Block as EDM2Block, EDM2Precond, UNet as EDM2UNet
from full.nets import NETWORKS
from full.nets.precond import Precond

MAX_PARAMETERS = 1 << 32        # about 4.3 billion; EDM2-XXL, the largest released model, has 1.5 billion
_SLACK_BYTES = 1 << 20

class _Shown(reprlib.Repr):
    """reprlib with limits, and no repr of objects other than plain values (theirs could be unbounded)."""

    def __init__(self):
        super().__init__()
        self.maxstring, self.maxother, self.maxlist, self.maxtuple, self.maxdict, self.maxlevel = 60, 60, 8, 8, 8, 3

    def repr_instance(self, x: Any, level: int) -> str:
        if type(x) in (float, bool, type(None)):
            return repr(x)
        return f"<{type(x).__name__}>"


_SHOWN = _Shown()


def shown(value: Any) -> str:
    """A short, bounded repr of a value from a file (safe for deep, huge or shared structures)."""
    try:
        return _SHOWN.repr(value)
    except (ValueError, RecursionError):  # e.g. an integer beyond Python's 4300-digit str limit
        return f"a {type(value).__name__} value too large to show"


@dataclass(frozen=True)
class Rule:
    """What one constructor argument may be. ``kind``: 'int', 'float', 'bool', 'choice', 'ints', 'numbers'."""

    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    none: bool = False                  # None allowed
    choices: tuple = ()
    length: tuple[int, int] = (0, 0)    # list length bounds for 'ints' and 'numbers'
    allow_inf: bool = False

    def describe(self) -> str:
        tail = " or null" if self.none else ""
        if self.kind == "int":
            return f"an integer from {self.lo:g} to {self.hi:g}{tail}"
        if self.kind == "float":
            if self.allow_inf:
                return f"a number >= {self.lo:g} (inf allowed){tail}"
            if self.hi == math.inf:
                return f"a finite number >= {self.lo:g}{tail}"
            return f"a number from {self.lo:g} to {self.hi:g}{tail}"
        if self.kind == "bool":
            return f"true or false{tail}"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices) + tail
        what = "integers" if self.kind == "ints" else "finite numbers"
        return f"a list of {self.length[0]} to {self.length[1]} {what} from {self.lo:g} to {self.hi:g}"

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none
        if self.kind == "bool":
            return type(value) is bool
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "int":
            return _is_int(value) and self.lo <= value <= self.hi
        if self.kind == "float":
            return _is_number(value) and (math.isfinite(value) or self.allow_inf and value == math.inf) \
                and self.lo <= value <= self.hi
        if not isinstance(value, (list, tuple)) or not self.length[0] <= len(value) <= self.length[1]:
            return False
        element = _is_int if self.kind == "ints" else _is_number
        return all(element(v) and math.isfinite(v) and self.lo <= v <= self.hi for v in value)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _int(lo, hi, none=False):
    return Rule("int", lo, hi, none=none)


def _float(lo, hi, allow_inf=False, none=False):
    return Rule("float", lo, hi, none=none, allow_inf=allow_inf)


_UNIT = _float(0, 1)
RULES: dict[str, Rule] = {
    # Shared by the wrappers (full.nets.precond, full.nets.edm2).
    "img_resolution": _int(1, 8192), "img_channels": _int(1, 1024), "label_dim": _int(0, 100_000),
    "use_fp16": Rule("bool"), "use_bf16": Rule("bool"),
    "sigma_min": _float(0, math.inf), "sigma_max": _float(0, math.inf, allow_inf=True),
    "sigma_data": _float(1e-6, 1e6), "model_type": Rule("choice", choices=tuple(ARCHITECTURES)),
    "beta_d": _float(0, 1000), "beta_min": _float(0, 1000), "M": _int(1, 4000), "epsilon_t": _float(1e-12, 1),
    "C_1": _float(0, 10), "C_2": _float(0, 10), "logvar_channels": _int(1, 4096),
    # U-Nets (full.nets.edm SongUNet / DhariwalUNet, full.nets.edm2 UNet and Block).
    "augment_dim": _int(0, 1024), "model_channels": _int(1, 4096),
    "channel_mult": Rule("ints", 1, 64, length=(1, 8)), "channel_mult_emb": _int(1, 64, none=True),
    "channel_mult_noise": _int(1, 64, none=True), "num_blocks": _int(0, 12),
    "attn_resolutions": Rule("ints", 0, 8192, length=(0, 16)), "dropout": _UNIT, "label_dropout": _UNIT,
    "embedding_type": Rule("choice", choices=("positional", "fourier")),
    "encoder_type": Rule("choice", choices=("standard", "skip", "residual")),
    "decoder_type": Rule("choice", choices=("standard", "skip")),
    "resample_filter": Rule("numbers", 0, 1e6, length=(1, 16)),
    "label_balance": _UNIT, "concat_balance": _UNIT, "res_balance": _UNIT, "attn_balance": _UNIT,
    "channels_per_head": _int(1, 4096), "clip_act": _float(1e-6, 1e6, none=True),
}
_FALLBACK = Rule("float", -1e6, 1e6)    # an argument without a rule (none today) must be a modest number


ENCODERS = ("StandardRGBEncoder", "StabilityVAEEncoder")
_ENCODER_RULES = {"scale": Rule("numbers", -1e6, 1e6, length=(1, 64)), "bias": Rule("numbers", -1e6, 1e6, length=(1, 64)),
                  "batch_size": _int(1, 65536)}


def check_encoder(value: Any, source: str, field: str) -> dict | None:
    """EDM2's pixel/latent encoder as recorded data, checked: None (EDM: pixels in [-1, 1]),
    ``{"kind": "StandardRGBEncoder"}``, or ``{"kind": "StabilityVAEEncoder", "vae_name": str, "scale": [C],
    "bias": [C], "batch_size": int}`` (NVlabs/edm2 ``training/encoders.py``: latents = raw * scale + bias)."""
    if value is None:
        return None
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind not in ENCODERS:
        raise CheckpointError(f"{source}: {field} is {shown(value)}; expected null or an object whose kind is "
                              + " or ".join(ENCODERS))
    keys = {"kind"} if kind == "StandardRGBEncoder" else {"kind", "vae_name", *_ENCODER_RULES}
    if set(value) != keys:
        raise CheckpointError(f"{source}: {field} of kind {kind} has fields {shown(sorted(value))}; expected "
                              f"{sorted(keys)}")
    if kind == "StandardRGBEncoder":
        return {"kind": kind}
    name = value["vae_name"]
    if not (isinstance(name, str) and 0 < len(name) <= 256):
        raise CheckpointError(f"{source}: {field}.vae_name is {shown(name)}; expected the name of a VAE, "
                              "e.g. 'stabilityai/sd-vae-ft-mse'")
    for key, rule in _ENCODER_RULES.items():
        if not rule.accepts(value[key]):
            raise CheckpointError(f"{source}: {field}.{key} is {shown(value[key])}; expected {rule.describe()}")
    if len(value["scale"]) != len(value["bias"]):
        raise CheckpointError(f"{source}: {field}.scale and {field}.bias differ in length "
                              f"({len(value['scale'])} and {len(value['bias'])}); expected one of each per channel")
    return {"kind": kind, "vae_name": name, "scale": [float(x) for x in value["scale"]],
            "bias": [float(x) for x in value["bias"]], "batch_size": value["batch_size"]}


def _parameters(cls, skip=()) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(cls).parameters.items()
            if p.kind is not inspect.Parameter.VAR_KEYWORD and name not in skip}


def accepted_arguments(name: str, kwargs: dict) -> set[str]:
    """Every keyword the network ``name`` accepts, its inner U-Net's (and EDM2's blocks') included."""
    cls = NETWORKS[name]
    accepted = set(_parameters(cls))
    if issubclass(cls, Precond):
        model_type = kwargs.get("model_type", inspect.signature(cls).parameters["model_type"].default)
        if model_type in ARCHITECTURES:
            accepted |= set(_parameters(ARCHITECTURES[model_type],
                                        ("img_resolution", "in_channels", "out_channels", "label_dim")))
    elif cls is EDM2Precond:
        accepted |= set(_parameters(EDM2UNet, ("img_resolution", "img_channels", "label_dim")))
        accepted |= set(_parameters(EDM2Block, ("in_channels", "out_channels", "emb_channels", "flavor",
                                                "resample_mode", "attention")))
    return accepted


def unknown_network(name: Any) -> CheckpointError:
    return CheckpointError(f"unknown preconditioner {shown(name)}; known: {', '.join(sorted(NETWORKS))}")


def check_kwargs(name: str, kwargs: Any, source: str, field: str) -> None:
    """Refuse constructor arguments of ``name`` from a file that are unknown, of the wrong type or absurd.

    ``source`` names the file and ``field`` where the arguments sit in it (``precond_kwargs``, ``_init_kwargs``).
    """
    if name not in NETWORKS:
        raise unknown_network(name)
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(f"{source}: {field} is not a map from argument names to values")
    accepted = accepted_arguments(name, kwargs)
    for key, value in kwargs.items():
        if key not in accepted:
            raise CheckpointError(f"{source}: {field}.{name_shown(key)} is not an argument of {name}"
                                  f"{_model_note(name, kwargs)}; the file is damaged or from another program")
        rule = RULES.get(key, _FALLBACK)
        if not rule.accepts(value):
            raise CheckpointError(f"{source}: {field}.{key} is {shown(value)}; expected {rule.describe()}")


def name_shown(key: Any) -> str:
    """A key from a file as it reads in a message: bare when it is a plain dotted name, else a bounded repr."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w.\-]{1,200}", key) else shown(key)


def _model_note(name: str, kwargs: dict) -> str:
    model_type = kwargs.get("model_type")
    return f" with model_type {model_type}" if isinstance(model_type, str) and model_type in ARCHITECTURES else ""


def resolve_kwargs(name: str, kwargs: dict) -> tuple[type[nn.Module], dict]:
    """The class ``NETWORKS[name]`` and its full keyword arguments (defaults filled in, ``**`` ones flattened)."""
    cls = NETWORKS.get(name)
    if cls is None:
        raise unknown_network(name)
    signature = inspect.signature(cls)
    try:
        bound = signature.bind(**kwargs)
    except TypeError as e:
        raise CheckpointError(f"bad arguments for {name}: {e}") from None
    bound.apply_defaults()
    var_kw = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    resolved = {k: v for k, v in bound.arguments.items() if k not in var_kw}
    for key in var_kw:
        resolved.update(bound.arguments[key])
    return cls, resolved


def build_on_meta(name: str, kwargs: dict, source: str, field: str) -> tuple[nn.Module, dict]:
    """Check file-given arguments and build the network on the meta device; returns (network, resolved kwargs)."""
    check_kwargs(name, kwargs, source, field)
    try:
        cls, resolved = resolve_kwargs(name, kwargs)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    try:
        with torch.device("meta"):
            net = cls(**resolved)
    except (TypeError, ValueError, ArithmeticError, LookupError, RuntimeError, AssertionError) as e:
        # The arguments come from the file and do not fit together (only file arguments are built here).
        raise CheckpointError(f"{source}: cannot build {name} from the recorded arguments "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
    return net, resolved


def materialize(net: nn.Module, entries: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                read: Callable[[], dict[str, torch.Tensor]], file_bytes: int, hint: str,
                error: type[Exception] = CheckpointError) -> nn.Module:
    """Give a meta-device ``net`` the file's tensors once names, shapes, dtypes and sizes agree.

    ``entries`` maps each tensor in the file to (dtype, shape) and ``read()`` returns the tensors themselves;
    ``hint`` starts every message (``FILE does not match EDMPrecond(SongUNet) built from its own arguments``).
    Tensors are cast to the network's dtype (float16 files are loaded as float32).
    """
    expected = net.state_dict()
    for key, value in expected.items():
        if key not in entries:
            raise error(f"{hint}: it lacks {key}")
        dtype, shape = entries[key]
        if tuple(shape) != tuple(value.shape):
            raise error(f"{hint}: {key} has shape {list(shape)}, expected {list(value.shape)}")
        if value.dtype.is_floating_point and not dtype.is_floating_point:
            raise error(f"{hint}: {key} holds {str(dtype).removeprefix('torch.')}, expected floating point")
    for key in entries:
        if key not in expected:
            raise error(f"{hint}: unexpected entry {name_shown(key)}")
    count = sum(v.numel() for v in expected.values())
    needed = sum(v.numel() * v.element_size() for v in expected.values())
    if count > MAX_PARAMETERS:
        raise error(f"{hint}: {count:,} parameters is beyond any real network (limit {MAX_PARAMETERS:,})")
    if needed > 2 * file_bytes + _SLACK_BYTES:
        raise error(f"{hint}: the network needs {needed:,} bytes but the file holds only {file_bytes:,}; "
                    "its tensors are not all really there")
    tensors = read()
    state = {}
    for key, value in expected.items():
        state[key] = tensors.pop(key).to(value.dtype)
    del tensors
    net.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:  # a tensor outside the state_dict: our constructors have none, so this is a bug
        raise RuntimeError(f"{type(net).__name__} keeps meta tensors after loading: {left[:5]}")
    return net
