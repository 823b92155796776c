"""Hostile or broken network files: every load ends within seconds and bounded memory, with one clear line.

Each case builds its file here (pickles through the EDM fixtures of test_edm_pickle, JSON sidecars and
safetensors files by hand) and names the message it must produce. `test_memory_and_time_of_every_case`
loads all of them in a fresh process and bounds the extra peak memory.
"""
import io
import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from test_edm_pickle import (TINY, Evil, Persistent, RawTensor, Toy, edm_pickle_bytes, splice, tiny_network,
                             write_edm_pickle)

from full.errors import CheckpointError
from full.mnist_classifier import ClassifierError, load_classifier, save_classifier, MnistClassifier
from full.store.network_file import load_network, save_network

SECONDS = 10                                 # generous: every case takes well under 5 s on 2 cores
ADM = TINY["edm-adm"][1]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RawStorage:
    """Pickled as ``torch.storage._load_from_bytes(blob)`` with any blob."""

    def __init__(self, blob: bytes):
        self.blob = blob

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.blob,)


def typed_storage(n: int):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.zeros(n).storage()


def shared_graph(depth: int = 30, width: int = 2) -> list:
    """A list DAG of ``depth`` levels whose expansion has width**depth leaves (linear size in the pickle)."""
    x = []
    for _ in range(depth):
        x = [x] * width
    return x


def cycle() -> list:
    x = [1]
    x.append(x)
    return x


def adm_pickle(path, **overrides) -> str:
    return write_edm_pickle(path, {"ema": tiny_network("edm-adm")}, **{"init_kwargs": ADM, **overrides})


# --- pickles --------------------------------------------------------------------------------------------

def _shared_modules(path):
    m = torch.nn.Linear(2, 2)
    for _ in range(60):
        parent = torch.nn.Module()
        parent.a, parent.b = m, m
        m = parent
    return write_edm_pickle(path, {"ema": m}, init_kwargs={})


def _module_cycle(path):
    net = Toy()
    net.enc.add_module("again", net.enc)
    return write_edm_pickle(path, {"ema": net}, init_kwargs={})


def _deep_modules(path):
    m = torch.nn.Linear(2, 2)
    for _ in range(100):
        parent = torch.nn.Module()
        parent.inner = m
        m = parent
    return write_edm_pickle(path, {"ema": m}, init_kwargs={})


def _deep_kwargs(path):
    data = edm_pickle_bytes({"ema": tiny_network("edm-adm")}, init_kwargs=dict(ADM, channel_mult="@@DEEP@@"))
    depth = 100_000  # EMPTY_LIST x depth, then APPEND x (depth - 1): one list nested depth deep
    path.write_bytes(splice(data, "@@DEEP@@", b"]" * depth + b"a" * (depth - 1)))
    return str(path)


def _with_tensor(path, key, value):
    """The tiny ADM network with the parameter ``key`` replaced by ``value`` (anything) in its pickle."""
    net = tiny_network("edm-adm")
    module_name, _, name = key.rpartition(".")
    net.get_submodule(module_name)._parameters[name] = value
    return write_edm_pickle(path, {"ema": net}, init_kwargs=ADM)


def _aliased_weights(path):
    """A real-size DDPM++ (55.7M parameters) whose every tensor is a view of one 2.4-MB storage: the names and
    shapes match, but the file cannot hold that network."""
    from full.store.network_file import build_network
    kwargs = dict(img_resolution=32, img_channels=3, model_type="SongUNet", model_channels=128,
                  channel_mult=[1, 2, 2, 2], num_blocks=4, attn_resolutions=[16])
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_network("EDMPrecond", **kwargs).state_dict().items()}
    storage = typed_storage(max(math.prod(s) for s in shapes.values()))
    contiguous = lambda shape: tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    inner = Persistent("SongUNet", _parameters={k[len("model."):]: RawTensor(storage, s, contiguous(s))
                                                for k, s in shapes.items()}, _buffers={}, _modules={})
    ema = Persistent("EDMPrecond", _parameters={}, _buffers={}, _modules={"model": inner})
    return write_edm_pickle(path, {"ema": ema}, init_kwargs=kwargs)


def _lying_storage(path):
    """A storage blob (legacy torch.save of 4 floats) whose record claims 2**31 - 1 elements."""
    buf = io.BytesIO()
    torch.save(typed_storage(4), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    at = data.index(b"K\x04", data.index(b"cpu"))  # BININT1 4, the element count
    bad = data[:at] + b"J" + struct.pack("<i", 2**31 - 1) + data[at + 2:]
    return _with_tensor(path, "model.map_layer0.weight", RawTensor(RawStorage(bad), (4,), (1,)))


PICKLE_CASES = {
    "kwargs-shared-graph": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, attn_resolutions=shared_graph())),
                            r"_init_kwargs.attn_resolutions\S* expands to more than 10,000 values"),
    "kwargs-shared-graph-wide": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, x=shared_graph(5, 1000))),
                                 r"_init_kwargs.x\S* expands to more than 10,000 values"),
    "kwargs-shared-graph-deep": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, x=shared_graph(100))),
                                 r"_init_kwargs.x\[0\]\S* is nested deeper than 32 levels"),
    "kwargs-run-code": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, x=Evil(os.system, f"touch {p.parent / 'pwned'}"))),
                        r"refused global posix\.system"),
    "kwargs-cycle": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, channel_mult=cycle())),
                     r"_init_kwargs.channel_mult\S* contains itself \(a reference cycle\)"),
    "kwargs-deep": (_deep_kwargs, r"nested deeper than 32 levels"),
    "modules-shared-graph": (_shared_modules, r"module a\.a\.\S*\.b in the pickle is also used elsewhere "
                                              r"\(shared submodule\)"),
    "modules-cycle": (_module_cycle, r"loops back on itself at enc.again"),
    "modules-deep": (_deep_modules, r"module tree in the pickle is deeper than 64 levels"),
    "model_channels-1e9": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, model_channels=10**9)),
                           r"_init_kwargs.model_channels is 1000000000; expected an integer from 1 to 4096"),
    "model_channels-4096": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, model_channels=4096)),
                            r"does not match EDMPrecond\(DhariwalUNet\) .*: model.map_layer0.weight has shape "
                            r"\[64, 16\], expected \[16384, 4096\]"),
    # Every argument at its limit (8 levels of 12 blocks, 4096 channels, attention everywhere): built on the
    # meta device within the time bound, then refused for not matching the file.
    "all-limits": (lambda p: adm_pickle(p, init_kwargs=dict(
                       ADM, img_resolution=8192, img_channels=1024, label_dim=100_000, model_channels=4096,
                       channel_mult=[64] * 8, num_blocks=12, attn_resolutions=[8192 >> i for i in range(8)],
                       augment_dim=1024)),
                   r"does not match EDMPrecond\(DhariwalUNet\) built from its own arguments: it lacks"),
    "num_blocks-1e6": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, num_blocks=10**6)),
                       r"_init_kwargs.num_blocks is 1000000; expected an integer from 0 to 12"),
    "channel_mult-1e5": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, channel_mult=[1] * 100_000)),
                         r"_init_kwargs.channel_mult .*expands to more than 10,000 values"),
    "iddpm-M-1e9": (lambda p: write_edm_pickle(p, {"ema": tiny_network("iddpm-adm")},
                                               init_kwargs=dict(TINY["iddpm-adm"][1], M=10**9)),
                    r"_init_kwargs.M is 1000000000; expected an integer from 1 to 4000"),
    "label_dim-negative": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, label_dim=-1)),
                           r"_init_kwargs.label_dim is -1; expected an integer from 0 to 100000"),
    "sigma_data-nan": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, sigma_data=np.float64("nan"))),
                       r"_init_kwargs.sigma_data is nan; expected a number from 1e-06 to 1e\+06"),
    "kwargs-tensor": (lambda p: adm_pickle(p, init_kwargs=dict(ADM, model_channels=torch.ones(3))),
                      r"_init_kwargs.model_channels has unsupported type Tensor"),
    "constructor-TypeError": (lambda p: write_edm_pickle(p, {"ema": tiny_network("edm-ddpmpp-cond")}, init_kwargs=dict(
                                  TINY["edm-ddpmpp-cond"][1], channel_mult_noise=None)),
                              r"cannot build EDMPrecond from the recorded arguments \(TypeError: unsupported operand"),
    "int-tensor": (lambda p: _with_tensor(p, "model.map_layer0.weight", torch.nn.Parameter(
                       torch.zeros(64, 16, dtype=torch.int64), requires_grad=False)),
                   r"model.map_layer0.weight holds int64, expected floating point"),
    "non-tensor-entry": (lambda p: _with_tensor(p, "model.map_layer0.weight", "not a tensor"),
                         r"entry model.map_layer0.weight of the pickle is not a tensor"),
    "tensor-beyond-storage": (lambda p: _with_tensor(p, "model.map_layer0.weight", RawTensor(
                                  typed_storage(4), (64, 16), (16, 1))),
                              r"a tensor of shape \[64, 16\] in the pickle reaches beyond its storage of 4 elements"),
    "tensor-stride-0": (lambda p: _with_tensor(p, "model.map_layer0.weight", RawTensor(
                            typed_storage(1), (100_000, 100_000), (0, 0))),
                        r"a tensor of shape \[100000, 100000\] in the pickle reaches beyond its storage of 1 elements"),
    "aliased-weights": (_aliased_weights, r"the network needs 2\d\d,\d\d\d,\d\d\d bytes but the file holds only "
                                          r"\d,\d\d\d,\d\d\d; its tensors are not all really there"),
    "storage-lies-about-size": (_lying_storage, r"not a readable EDM network pickle \(RuntimeError: storage has "
                                                r"wrong byte size"),
    "truncated": (lambda p: p.write_bytes(edm_pickle_bytes({"ema": tiny_network("edm-adm")})[:5000]) and str(p),
                  r"not a readable EDM network pickle \(UnpicklingError: pickle data was truncated\)"),
    "bytes-length-2**60": (lambda p: p.write_bytes(b"\x80\x04\x8e" + (2**60).to_bytes(8, "little") + b"abc")
                           and str(p), r"not a readable EDM network pickle \((MemoryError|UnpicklingError|"
                                       r"OverflowError)"),
    "object-array": (lambda p: write_edm_pickle(p, {"ema": tiny_network("edm-adm"), "encoder": Persistent(
                         "StabilityVAEEncoder", scale=np.array([1, "x"], dtype=object))}, init_kwargs=ADM),
                     r"refused numpy dtype 'O8'"),
}


# --- JSON sidecars and safetensors files of our pair ----------------------------------------------------

def _pair(path, edit=None, net="edm-adm"):
    """A valid pair NAME.json/NAME.safetensors of a tiny network, its JSON edited by ``edit(meta)``."""
    stem = save_network(tiny_network(net), path.parent / path.stem)
    if edit:
        meta_path = stem + ".json"
        meta = json.loads(open(meta_path).read())
        edit(meta)
        with open(meta_path, "w") as f:
            f.write(json.dumps(meta) if not isinstance(meta, str) else meta)
    return stem + ".json"


def _kwarg(name, value):
    return lambda meta: meta["precond_kwargs"].__setitem__(name, value)


def _raw_json(path, text):
    stem = _pair(path)
    with open(stem, "w") as f:
        f.write(text)
    return stem


def write_safetensors(path, header: dict, data: bytes, length: int | None = None) -> str:
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return str(path)


def _pair_with_weights(path, header, data, length=None):
    """A valid JSON beside a hand-written safetensors file carrying the same weights_id."""
    json_path = _pair(path)
    meta = json.loads(open(json_path).read())
    header = dict(header, __metadata__={"format": "sid-network", "weights_id": meta["weights_id"]})
    write_safetensors(json_path[: -len(".json")] + ".safetensors", header, data, length)
    return json_path


def _int_weights(path):
    from safetensors.torch import save_file
    json_path = _pair(path)
    weights = json_path[: -len(".json")] + ".safetensors"
    from safetensors import safe_open
    with safe_open(weights, "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["model.map_layer0.weight"] = tensors["model.map_layer0.weight"].to(torch.int32)
    save_file(tensors, weights, metadata=metadata)
    return json_path


F32 = lambda shape, begin: {"dtype": "F32", "shape": list(shape), "data_offsets": [begin, begin + 4 * math.prod(shape)]}

PAIR_CASES = {
    "json-model_channels-1e9": (lambda p: _pair(p, _kwarg("model_channels", 10**9)),
                                r"\.json: precond_kwargs.model_channels is 1000000000; expected an integer from 1 to 4096"),
    "json-model_channels-4096": (lambda p: _pair(p, _kwarg("model_channels", 4096)),
                                 r"\.json does not match EDMPrecond\(DhariwalUNet\) built from its own arguments: "
                                 r"model.map_layer0.weight has shape \[64, 16\], expected \[16384, 4096\]"),
    "json-label_dim-negative": (lambda p: _pair(p, _kwarg("label_dim", -1)),
                                r"\.json: precond_kwargs.label_dim is -1; expected an integer from 0 to 100000"),
    "json-sigma_data-string-nan": (lambda p: _pair(p, _kwarg("sigma_data", "nan")),
                                   r"\.json: precond_kwargs.sigma_data is 'nan'; expected a number from 1e-06"),
    "json-sigma_data-NaN": (lambda p: _pair(p, _kwarg("sigma_data", float("nan"))),
                            r"\.json: precond_kwargs.sigma_data is nan; expected a number"),
    "json-img_resolution-0": (lambda p: _pair(p, _kwarg("img_resolution", 0)),
                              r"\.json: precond_kwargs.img_resolution is 0; expected an integer from 1 to 8192"),
    "json-unknown-kwarg": (lambda p: _pair(p, _kwarg("warp_factor", 9)),
                           r"\.json: precond_kwargs.warp_factor is not an argument of EDMPrecond with model_type "
                           r"DhariwalUNet"),
    "json-bool-as-int": (lambda p: _pair(p, _kwarg("model_channels", True)),
                         r"precond_kwargs.model_channels is True; expected an integer"),
    "json-channel_mult-long": (lambda p: _pair(p, _kwarg("channel_mult", [1] * 100_000)),
                               r"precond_kwargs.channel_mult is \[1, 1, 1, .*\]; expected a list of 1 to 8 integers"),
    "json-resolution-mismatch": (lambda p: _pair(p, lambda m: m.__setitem__("resolution", 64)),
                                 r"\.json: resolution is 64 but precond_kwargs.img_resolution is 8"),
    "json-unknown-precond": (lambda p: _pair(p, lambda m: m.__setitem__("precond", "posix.system")),
                             r"\.json: unknown preconditioner 'posix.system'"),
    "json-kwargs-not-object": (lambda p: _pair(p, lambda m: m.__setitem__("precond_kwargs", [1, 2])),
                               r"\.json lacks 'precond' or 'precond_kwargs'"),
    "json-encoder-bad": (lambda p: _pair(p, lambda m: m.__setitem__("encoder", {"kind": "StabilityVAEEncoder",
                         "vae_name": "x", "scale": [1.0], "bias": [0.0, 1.0], "batch_size": 8})),
                         r"\.json: encoder.scale and encoder.bias differ in length"),
    "json-deep": (lambda p: _raw_json(p, "[" * 100_000 + "]" * 100_000), r"\.json: not valid JSON"),
    "json-huge": (lambda p: _raw_json(p, '{"format": "sid-network", "pad": "' + "x" * (17 << 20) + '"}'),
                  r"\.json is larger than 16 MB"),
    "json-truncated": (lambda p: _raw_json(p, '{"format": "sid-network", "version": 1, "precond": "EDMPr'),
                       r"\.json: not valid JSON"),
    "safetensors-header-longer-than-file": (
        lambda p: _pair_with_weights(p, {"w": F32((2,), 0)}, b"\0" * 8, length=1 << 40),
        r"\.safetensors is not a valid safetensors file: its header claims 1,099,511,627,776 bytes"),
    "safetensors-offsets-beyond-file": (
        lambda p: _pair_with_weights(p, {"w": {"dtype": "F32", "shape": [10**6, 10**6],
                                               "data_offsets": [0, 4 * 10**12]}}, b"\0" * 8),
        r"entry 'w' has byte range \[0, 4000000000000\] outside the 8 bytes of data"),
    "safetensors-shape-lies": (lambda p: _pair_with_weights(p, {"w": {"dtype": "F32", "shape": [1000, 1000],
                                                                      "data_offsets": [0, 8]}}, b"\0" * 8),
                               r"entry 'w' has shape \[1000, 1000\] of F32 but 8 bytes"),
    "safetensors-overlap": (lambda p: _pair_with_weights(p, {"a": F32((2,), 0), "b": F32((2,), 4)}, b"\0" * 12),
                            r"entries 'a' and 'b' overlap"),
    "safetensors-unknown-dtype": (lambda p: _pair_with_weights(p, {"a": {"dtype": "PY_OBJECT", "shape": [1],
                                                                         "data_offsets": [0, 8]}}, b"\0" * 8),
                                  r"entry 'a' has unknown dtype 'PY_OBJECT'"),
    "safetensors-truncated": (lambda p: _pair_with_weights(p, {"w": F32((1000,), 0)}, b"\0" * 100),
                              r"entry 'w' has byte range \[0, 4000\] outside the 100 bytes of data"),
    "safetensors-int-weights": (_int_weights, r"model.map_layer0.weight holds int32, expected floating point"),
}


def _classifier(path, kwargs=None):
    stem = save_classifier(MnistClassifier(width=4, features=8), str(path.parent / path.stem), {}, {})
    if kwargs is not None:
        meta = json.loads(open(stem + ".json").read())
        meta["kwargs"].update(kwargs)
        open(stem + ".json", "w").write(json.dumps(meta))
    return stem + ".json"


CLASSIFIER_CASES = {
    "classifier-width-1e6": (lambda p: _classifier(p, {"width": 10**6}),
                             r"\.json: kwargs.width is 1000000; expected an integer from 1 to 1024"),
    "classifier-width-1024": (lambda p: _classifier(p, {"width": 1024}),
                              r"does not match MnistClassifier.*conv.0.weight has shape \[4, 1, 3, 3\], "
                              r"expected \[1024, 1, 3, 3\]"),
    "classifier-unknown-kwarg": (lambda p: _classifier(p, {"depth": 3}),
                                 r"\.json: kwargs.depth is not an argument of MnistClassifier"),
}

CASES = {**{k: ("network", *v) for k, v in {**PICKLE_CASES, **PAIR_CASES}.items()},
         **{k: ("classifier", *v) for k, v in CLASSIFIER_CASES.items()}}


def build_case(name: str, directory) -> str:
    kind, build, _ = CASES[name]
    suffix = ".pkl" if name in PICKLE_CASES else ".json"
    return os.fspath(build(directory / (name + suffix)))


def load_case(kind: str, path: str):
    return load_network(path) if kind == "network" else load_classifier(path)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_file_is_one_line_within_seconds(tmp_path, name):
    kind, _, message = CASES[name]
    marker = tmp_path / "pwned"
    path = build_case(name, tmp_path)
    start = time.perf_counter()
    with pytest.raises(ClassifierError if kind == "classifier" else CheckpointError, match=message) as info:
        load_case(kind, path)
    assert time.perf_counter() - start < SECONDS
    text = str(info.value)
    assert "\n" not in text and len(text) < 600 and not marker.exists()


def test_exotic_provenance_does_not_block_or_expand(tmp_path):
    """dataset_kwargs is informative: a graph of shared references or a cycle there is dropped, quickly."""
    for dataset in (shared_graph(), shared_graph(100), cycle()):
        path = write_edm_pickle(tmp_path / "x.pkl", {"ema": tiny_network("edm-adm"), "dataset_kwargs": {"x": dataset}},
                                init_kwargs=ADM)
        start = time.perf_counter()
        net = load_network(path)
        assert time.perf_counter() - start < SECONDS and "dataset_kwargs" not in net.provenance


def test_meta_build_errors_are_one_line_only_for_file_arguments(tmp_path, monkeypatch):
    """A constructor's ValueError on arguments from a file is one line; from our own code it keeps its type."""
    from full.nets import edm
    from full.store.network_file import build_network

    def refuse(self, *args, **kwargs):
        raise ValueError("the constructor refuses these arguments")

    path = adm_pickle(tmp_path / "x.pkl")
    monkeypatch.setattr(edm.PositionalEmbedding, "__init__", refuse)  # inside DhariwalUNet
    with pytest.raises(CheckpointError, match=r"\.pkl: cannot build EDMPrecond from the recorded arguments "
                                              r"\(ValueError: the constructor refuses these arguments\)"):
        load_network(path)
    with pytest.raises(ValueError, match="the constructor refuses") as info:
        build_network("EDMPrecond", **ADM)
    assert not isinstance(info.value, CheckpointError)


_MEASURE = r"""
import json, os, re, resource, sys, time
sys.path.insert(0, sys.argv[1])
import test_hostile_files as cases
from full.errors import SidError

def status(field):  # kB, from /proc/self/status
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1))

def reset_peak():  # Linux >= 4.0: VmHWM starts again from the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

cases.load_case("network", sys.argv[3])  # warm up: imports and the first meta-device build (loads torch._dynamo)
seconds, extra = {}, {}
for kind, path in json.loads(sys.argv[2]):
    before = status("VmRSS")
    reset_peak()
    start = time.perf_counter()
    try:
        cases.load_case(kind, path)
        raise SystemExit(f"{path} loaded")
    except SidError:
        pass
    seconds[os.path.basename(path)] = time.perf_counter() - start
    extra[os.path.basename(path)] = (status("VmHWM") - before) / 1024
print(json.dumps({"seconds": seconds, "extra_mb": extra}))
"""


def test_memory_and_time_of_every_case(tmp_path):
    """All hostile files loaded in one fresh process: each refused within the time bound, its peak resident
    memory (VmHWM, reset before each case) less than 300 MB above the resident memory before it."""
    paths = [(CASES[name][0], build_case(name, tmp_path)) for name in CASES]
    good = save_network(tiny_network("edm-adm"), tmp_path / "good") + ".json"
    done = subprocess.run([sys.executable, "-c", _MEASURE, os.path.join(ROOT, "tests"), json.dumps(paths), good],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    assert max(result["seconds"].values()) < SECONDS
    assert max(result["extra_mb"].values()) < 300


def test_every_constructor_argument_has_a_rule():
    """A new constructor argument must get a limit in RULES (arguments without one fall back to small numbers)."""
    from full.nets import NETWORKS
    from full.store.safe_build import RULES, accepted_arguments
    names = set()
    for network in NETWORKS:
        for model_type in ("SongUNet", "DhariwalUNet"):
            names |= accepted_arguments(network, {"model_type": model_type})
    assert names == set(RULES)


def test_released_configurations_are_within_the_limits():
    """The limits refuse only absurd files: every released EDM2 size and EDM's largest networks pass them."""
    from full.nets.edm2 import EDM2_CONFIGS
    from full.store.safe_build import check_kwargs
    for name, kwargs in EDM2_CONFIGS.items():
        check_kwargs("EDM2Precond", kwargs, name, "kwargs")
    edm = {  # NVlabs/edm train.py: the kwargs recorded by the released pickles
        "cifar10-cond-vp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                                decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                                model_channels=128, channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13,
                                use_fp16=False, img_resolution=32, img_channels=3, label_dim=10),
        "imagenet-64-adm": dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4],
                                dropout=0.1, use_fp16=True, img_resolution=64, img_channels=3, label_dim=1000,
                                sigma_data=0.5),
    }
    for name, kwargs in edm.items():
        check_kwargs("EDMPrecond", kwargs, name, "_init_kwargs")
