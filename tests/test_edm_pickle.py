"""Safe EDM pickle import: files written the way EDM's persistence module writes them load bit-exactly,
and malicious pickles are refused before anything in them runs."""
import builtins
import collections
import contextlib
import io
import os
import pickle
import pickletools
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from full.store.edm_pickle import flatten_state_dict, load_edm_pickle, read_edm_pickle
from full.errors import CheckpointError

_OURS = ("precond_name", "init_kwargs", "provenance")  # attributes build_network adds; EDM has no such fields


@contextlib.contextmanager
def fake_persistence():
    """Register throwaway ``torch_utils.persistence`` and ``dnnlib.util`` modules so pickles can name EDM's
    reconstruct function and EDM2's ``EasyDict``; yields (reconstruct, EasyDict)."""
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the importer must never call the pickled reconstruct function")

    class EasyDict(dict):
        """dnnlib.util.EasyDict as EDM2 defines it: a dict whose items are also attributes."""

        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def __setattr__(self, name, value):
            self[name] = value

    modules = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib",
                                                         "dnnlib.util")}
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["dnnlib.util"].EasyDict = EasyDict
    modules["torch_utils"].persistence = modules["torch_utils.persistence"]
    modules["dnnlib"].util = modules["dnnlib.util"]
    sys.modules.update(modules)
    try:
        yield _reconstruct_persistent_obj, EasyDict
    finally:
        for name in modules:
            del sys.modules[name]


class Persistent:
    """A non-module object that EDM2 pickles as a persistent record (its encoders and loss); ``state`` is its
    ``__dict__`` as the record stores it."""

    def __init__(self, class_name, **state):
        self.class_name, self.state = class_name, state


class RawTensor:
    """Pickled as ``_rebuild_tensor_v2(storage, offset, size, stride, ...)`` with whatever size and stride."""

    def __init__(self, storage, size, stride, offset=0):
        self.storage, self.size, self.stride, self.offset = storage, tuple(size), tuple(stride), offset


class EasyDictPayload:
    """Stands for an ``EasyDict`` whose pickled items are given here (built inside the fake modules)."""

    def __init__(self, **items):
        self.items = items


def edm_pickle_bytes(top: dict, class_name=None, init_kwargs=None, extra_state=None, names=None, protocol=4) -> bytes:
    """Pickle ``top`` as EDM/EDM2 do: every module except ``ModuleDict`` (and every `Persistent`) becomes
    ``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``;
    overrides apply to ``top['ema']``; ``names`` renames classes (EDM2 calls EDM2Precond ``Precond``);
    an `EasyDictPayload` (also as ``top`` itself) becomes ``dnnlib.util.EasyDict``."""
    ema = top.get("ema") if isinstance(top, dict) else top.items.get("ema")
    names = names or {}

    class EdmPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, RawTensor):
                return torch._utils._rebuild_tensor_v2, (obj.storage, obj.offset, obj.size, obj.stride, False,
                                                         collections.OrderedDict())
            if isinstance(obj, Persistent):
                state = dict(obj.state, _init_args=(), _init_kwargs={})
                name = obj.class_name
            elif isinstance(obj, torch.nn.Module) and type(obj) is not torch.nn.ModuleDict:
                state = {k: v for k, v in obj.__dict__.items() if k not in _OURS}
                state.update(_init_args=(), _init_kwargs=dict(getattr(obj, "init_kwargs", {})))
                name = names.get(type(obj).__name__, type(obj).__name__)
            else:
                return NotImplemented
            if obj is ema:
                state["_init_kwargs"] = init_kwargs if init_kwargs is not None else state["_init_kwargs"]
                state.update(extra_state or {})
                name = class_name or name
            meta = dict(type="class", version=6, module_src="# the whole networks.py\n", class_name=name, state=state)
            return reconstruct, (meta,)

    def easy(obj):  # payloads become real (fake-module) EasyDicts, pickled by NEWOBJ + SETITEMS as in EDM2
        if isinstance(obj, EasyDictPayload):
            return easy_dict({k: easy(v) for k, v in obj.items.items()})
        return obj

    with fake_persistence() as (reconstruct, easy_dict):
        buf = io.BytesIO()
        EdmPickler(buf, protocol=protocol).dump(easy(top))
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    return buf.getvalue()


def write_edm_pickle(path, top: dict, **overrides) -> str:
    path = os.fspath(path)
    with open(path, "wb") as f:
        f.write(edm_pickle_bytes(top, **overrides))
    return path


def unframe(data: bytes) -> bytes:
    """The same pickle without its FRAME opcodes (optional for readers), so that opcodes can change length."""
    found = list(pickletools.genops(data))
    ends = [pos for _, _, pos in found[1:]] + [found[-1][2] + 1]  # each opcode runs to the next one; STOP is 1 byte
    return b"".join(data[pos:end] for (op, _, pos), end in zip(found, ends) if op.name != "FRAME")


def short_string(text: str) -> bytes:
    """The SHORT_BINUNICODE opcode that pushes ``text``."""
    encoded = text.encode()
    return b"\x8c" + bytes([len(encoded)]) + encoded


def splice(data: bytes, marker: str, ops: bytes) -> bytes:
    """Replace the opcode that pushes the string ``marker`` in a pickle by raw opcodes ``ops`` (which must push
    exactly one object)."""
    data = unframe(data)
    assert data.count(short_string(marker)) == 1, "the marker must occur once"
    return data.replace(short_string(marker), ops)


class Toy(torch.nn.Module):
    """Covers every state_dict rule: None parameter, non-persistent buffer, ModuleDict, None child."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)
        self.register_parameter("unused", None)
        self.register_buffer("filt", torch.arange(4.0))
        self.register_buffer("cache", torch.ones(2), persistent=False)
        self.enc = torch.nn.ModuleDict({"8x8_conv": torch.nn.Conv2d(1, 2, 3), "4x4_skip": None})
        self.post = torch.nn.Linear(4, 1, bias=False)


def test_flatten_matches_state_dict_bit_exactly(tmp_path):
    net = Toy()
    top = read_edm_pickle(write_edm_pickle(tmp_path / "toy.pkl", {"ema": net, "dataset_kwargs": {"path": "x"}}))
    assert "torch_utils" not in sys.modules
    assert top["ema"].class_name == "Toy"
    flat, ref = flatten_state_dict(top["ema"]), net.state_dict()
    assert list(flat) == list(ref)
    assert all(torch.equal(flat[k], ref[k]) and flat[k].dtype == ref[k].dtype for k in ref)


def test_numpy_init_kwargs_become_python(tmp_path):
    net = Toy()
    kwargs = {"img_resolution": np.int64(8), "sigma_data": np.float64(0.5), "channel_mult": [np.int64(1), 2]}
    spec = load_edm_pickle(write_edm_pickle(tmp_path / "network-snapshot-000123.pkl", {"ema": net},
                                            init_kwargs=kwargs))
    assert spec.precond == "Toy" and spec.kwargs == {"img_resolution": 8, "sigma_data": 0.5, "channel_mult": [1, 2]}
    assert type(spec.kwargs["img_resolution"]) is int and type(spec.kwargs["sigma_data"]) is float
    assert spec.provenance["kimg"] == 123 and len(spec.provenance["sha256"]) == 64


class Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("make", [
    lambda marker: Evil(os.system, f"touch {marker}"),
    lambda marker: Evil(builtins.eval, f"open({str(marker)!r}, 'w')"),
    lambda marker: Evil(subprocess.Popen, ["touch", str(marker)]),
    lambda marker: Evil(builtins.exec, f"open({str(marker)!r}, 'w')"),
], ids=["os.system", "eval", "Popen", "exec"])
@pytest.mark.parametrize("where", ["top", "state"])
def test_malicious_pickles_are_refused(tmp_path, make, where):
    marker = tmp_path / "pwned"
    evil = make(marker)
    name = f"{evil.func.__module__}.{evil.func.__name__}"
    top = {"ema": Toy(), "payload": evil} if where == "top" else {"ema": Toy()}
    path = write_edm_pickle(tmp_path / "evil.pkl", top, extra_state={"skip_scale": evil} if where == "state" else None)
    with pytest.raises(CheckpointError, match=f"refused global {name}"):
        load_edm_pickle(path)
    assert not marker.exists()


def test_plain_pickled_module_is_refused(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"ema": torch.nn.Linear(2, 2)}))
    with pytest.raises(CheckpointError, match="refused global torch.nn.modules.linear.Linear"):
        read_edm_pickle(path)


@pytest.mark.parametrize("top, message", [
    ({"G_ema": 1}, "no 'ema' entry"),
    ({"ema": {"a": 1}}, "not an EDM persistent network"),
])
def test_wrong_content(tmp_path, top, message):
    path = write_edm_pickle(tmp_path / "x.pkl", top)
    with pytest.raises(CheckpointError, match=message):
        load_edm_pickle(path)


def test_corrupt_and_foreign_files(tmp_path):
    good = edm_pickle_bytes({"ema": Toy()})
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    torch.save({"ema": Toy().state_dict()}, tmp_path / "zip.pkl")
    for name in ("cut.pkl", "zip.pkl"):
        with pytest.raises(CheckpointError, match="not a readable EDM network pickle"):
            read_edm_pickle(tmp_path / name)
    with pytest.raises(CheckpointError, match="cannot read"):
        read_edm_pickle(tmp_path / "absent.pkl")


# --- real networks (full.nets.precond) -------------------------------------------------------------------

UNET = dict(img_resolution=8, img_channels=1, model_channels=16, channel_mult=[1, 2], num_blocks=1,
            attn_resolutions=[4])
TINY = {  # kwargs as EDM's train.py passes them: only what differs from the constructor defaults
    "edm-ddpmpp-cond": ("EDMPrecond", dict(UNET, label_dim=3, model_type="SongUNet", embedding_type="positional",
                                           encoder_type="standard", decoder_type="standard", channel_mult_noise=1,
                                           resample_filter=[1, 1], augment_dim=9, dropout=0.13, use_fp16=False)),
    "ve-ncsnpp": ("VEPrecond", dict(UNET, model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                                    decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1])),
    "edm-adm": ("EDMPrecond", dict(UNET, label_dim=3, model_type="DhariwalUNet")),
    "iddpm-adm": ("iDDPMPrecond", dict(UNET, model_type="DhariwalUNet")),
}


def tiny_network(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny real network with random (not zero-initialised) weights and buffers kept as built."""
    from full.store.network_file import build_network
    precond, kwargs = TINY[name]
    net = build_network(precond, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return net.eval()


def network_inputs(net, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    kw = net.init_kwargs
    x = torch.randn(2, kw["img_channels"], kw["img_resolution"], kw["img_resolution"], generator=gen)
    labels = torch.eye(kw["label_dim"])[:2] if kw["label_dim"] else None
    return x, torch.tensor([0.5, 7.0]), labels


@pytest.mark.parametrize("name", list(TINY))
def test_edm_pickle_loads_bit_exactly(tmp_path, name):
    from full.store.network_file import load_network
    net = tiny_network(name)
    precond, passed = TINY[name]
    top = {"ema": net, "loss_fn": Toy(), "augment_pipe": None, "dataset_kwargs": {"path": "cifar10.zip", "xflip": False}}
    path = write_edm_pickle(tmp_path / "edm.pkl", top, init_kwargs=dict(passed, sigma_data=np.float64(0.5))
                            if precond == "EDMPrecond" else passed)
    loaded = load_network(path)
    assert type(loaded) is type(net) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    ref, got = net.state_dict(), loaded.state_dict()
    assert list(got) == list(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert loaded.provenance["dataset_kwargs"] == top["dataset_kwargs"]
    with torch.no_grad():
        assert torch.equal(loaded(*network_inputs(net)), net(*network_inputs(net)))
