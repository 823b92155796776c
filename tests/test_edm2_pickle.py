"""EDM2's release pickles (``edm2-img*.pkl``): loaded into EDM2Precond without running their code, float16
weights upcast to float32, the encoder recorded as data; through full.load_network and python -m full.checkpoint.

The files are built here the way NVlabs/edm2 ``training/training_loop.py`` writes them: a ``dnnlib.util.EasyDict``
with ``encoder``, ``dataset_kwargs``, ``loss_fn`` and ``ema`` (the Precond in float16), every class a
``torch_utils.persistence`` record, the latent encoder's ``scale`` and ``bias`` numpy float32 arrays.
"""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_edm2_networks import randomize_gains
from test_edm_pickle import (EasyDictPayload, Evil, Persistent, edm_pickle_bytes, short_string, unframe,
                             write_edm_pickle)

import full
from full.errors import CheckpointError
from full.nets.edm2 import EDM2Precond
from full.store.network_file import inspect_network, load_network

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACES = {  # EDM2's two kinds: 64x64 RGB pixels (img64) and 64x64x4 Stable Diffusion latents (img512)
    "pixel": dict(img_channels=3, label_dim=3),
    "latent": dict(img_channels=4, label_dim=0),
}
RAW_MEAN, RAW_STD = [5.81, 3.25, 0.12, -2.15], [4.17, 4.62, 3.71, 3.28]  # StabilityVAEEncoder defaults


def init_kwargs(space):
    """What EDM2's training loop records: the interface kwargs plus the preset's network kwargs."""
    return dict(img_resolution=8, **SPACES[space], model_channels=16, channel_mult=[1, 2], num_blocks=1,
                attn_resolutions=[4], channels_per_head=8, logvar_channels=8, dropout=0.0, use_fp16=True)


def tiny_edm2(space, seed=0):
    torch.manual_seed(seed)
    return randomize_gains(EDM2Precond(**init_kwargs(space)).eval())


def encoder(space):
    if space == "pixel":
        return Persistent("StandardRGBEncoder")
    scale = np.float32(0.5) / np.array(RAW_STD, np.float32)
    return Persistent("StabilityVAEEncoder", vae_name="stabilityai/sd-vae-ft-mse", scale=scale,
                      bias=np.float32(0) - np.array(RAW_MEAN, np.float32) * scale, batch_size=8, _vae=None)


def edm2_top(space, net, **extra):
    data = EasyDictPayload(class_name="training.dataset.ImageFolderDataset", path=f"img-{space}.zip", use_labels=True)
    return EasyDictPayload(encoder=encoder(space), dataset_kwargs=data,
                           loss_fn=Persistent("EDM2Loss", P_mean=-0.4, P_std=1.0, sigma_data=0.5),
                           ema=copy.deepcopy(net).to(torch.float16), **extra)


def write_edm2(path, space, net, **extra):
    data = edm_pickle_bytes(edm2_top(space, net, **extra), init_kwargs=init_kwargs(space),
                            names={"EDM2Precond": "Precond"})
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def globals_of(data: bytes) -> set:
    """The (module, name) pairs a pickle imports, recorded while the safe importer reads it."""
    from full.store import edm_pickle
    found = set()

    class Recorder(edm_pickle._SafeUnpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    import io
    Recorder(io.BytesIO(data)).load()
    return found


def inputs(space, seed=1):
    g = torch.Generator().manual_seed(seed)
    kw = SPACES[space]
    x = torch.randn(2, kw["img_channels"], 8, 8, generator=g)
    labels = torch.eye(kw["label_dim"])[:2] if kw["label_dim"] else None
    return x, torch.tensor([0.3, 4.0]), labels


def test_fixture_uses_exactly_the_release_globals(tmp_path):
    data = open(write_edm2(tmp_path / "x.pkl", "latent", tiny_edm2("latent")), "rb").read()
    assert globals_of(data) == {
        ("dnnlib.util", "EasyDict"), ("torch_utils.persistence", "_reconstruct_persistent_obj"),
        ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
        ("torch.storage", "_load_from_bytes"), ("torch.nn.modules.container", "ModuleDict"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}


@pytest.mark.parametrize("space", list(SPACES))
def test_release_pickle_loads_into_edm2precond(tmp_path, space):
    net = tiny_edm2(space)
    path = write_edm2(tmp_path / "edm2-img64-s-0001234-0.075.pkl", space, net)
    loaded = full.load_network(path)
    assert type(loaded) is EDM2Precond and not loaded.training and loaded.stored_dtype == "float16"
    assert not any(p.requires_grad for p in loaded.parameters())
    ref = net.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(ref)  # EDM2's keys, in EDM2's order
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], ref[k].half().float()) for k in ref)
    rounded = copy.deepcopy(net).half().float()
    with torch.no_grad():
        out = loaded(*inputs(space))
        torch.testing.assert_close(out, rounded(*inputs(space)), rtol=1e-5, atol=1e-5)  # same weights, same maths
        torch.testing.assert_close(out, net(*inputs(space)), rtol=0, atol=5e-2)  # fp16 rounding of the weights
    prov = loaded.provenance
    assert prov["source_format"] == "edm2-pickle" and (prov["kimg"], prov["ema_std"]) == (1234, 0.075)
    assert prov["dataset_kwargs"]["path"] == f"img-{space}.zip"
    assert prov["loss_fn"] == {"class_name": "EDM2Loss", "P_mean": -0.4, "P_std": 1.0, "sigma_data": 0.5}
    if space == "pixel":
        assert loaded.encoder == {"kind": "StandardRGBEncoder"}
    else:
        scale = np.float32(0.5) / np.array(RAW_STD, np.float32)
        assert loaded.encoder == {"kind": "StabilityVAEEncoder", "vae_name": "stabilityai/sd-vae-ft-mse",
                                  "scale": scale.tolist(), "bias": (-np.array(RAW_MEAN, np.float32) * scale).tolist(),
                                  "batch_size": 8}


def test_numpy_1_names_load_the_same(tmp_path):
    """numpy 1.x writes numpy.core.multiarray._reconstruct (numpy 2: numpy._core); rename it in the file."""
    net = tiny_edm2("latent")
    data = unframe(open(write_edm2(tmp_path / "a.pkl", "latent", net), "rb").read())
    new, old = short_string("numpy.core.multiarray"), short_string("numpy._core.multiarray")
    assert data.count(old) == 1
    (tmp_path / "b.pkl").write_bytes(data.replace(old, new))
    assert ("numpy.core.multiarray", "_reconstruct") in globals_of((tmp_path / "b.pkl").read_bytes())
    a, b = load_network(tmp_path / "a.pkl"), load_network(tmp_path / "b.pkl")
    assert a.encoder == b.encoder and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                                             b.state_dict().values()))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "full.checkpoint", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_inspect_and_convert_keep_the_encoder(tmp_path):
    net = tiny_edm2("latent")
    pkl = write_edm2(tmp_path / "edm2-img512-xs-0002147-0.135.pkl", "latent", net)
    done = run_cli("inspect", pkl, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["preconditioner"] == "EDM2Precond" and info["architecture"] == "EDM2UNet"
    assert info["dtype"] == "stored float16, loaded as float32"
    assert info["parameters"] == sum(p.numel() for p in net.parameters())
    assert info["encoder"]["kind"] == "StabilityVAEEncoder" and len(info["encoder"]["scale"]) == 4
    done = run_cli("convert", pkl, tmp_path / "xs")
    assert done.returncode == 0, done.stderr
    meta = json.loads((tmp_path / "xs.json").read_text())
    from_pickle = load_network(pkl)
    assert meta["encoder"] == from_pickle.encoder and meta["precond"] == "EDM2Precond"
    assert meta["precond_kwargs"]["model_channels"] == 16 and meta["architecture"] == "EDM2UNet"
    converted = load_network(tmp_path / "xs")
    assert converted.encoder == from_pickle.encoder and converted.stored_dtype == "float32"
    assert all(torch.equal(a, b) for a, b in zip(converted.state_dict().values(), from_pickle.state_dict().values()))
    text = inspect_network(tmp_path / "xs.json")
    assert text["dtype"] == "float32" and text["provenance"]["kimg"] == 2147


def test_pixel_pair_records_the_rgb_encoder_and_edm_pairs_none(tmp_path):
    from full.store.network_file import save_network
    from test_edm_pickle import tiny_network
    pixel = load_network(write_edm2(tmp_path / "p.pkl", "pixel", tiny_edm2("pixel")))
    save_network(pixel, tmp_path / "p")
    assert json.loads((tmp_path / "p.json").read_text())["encoder"] == {"kind": "StandardRGBEncoder"}
    assert load_network(tmp_path / "p").encoder == {"kind": "StandardRGBEncoder"}
    save_network(tiny_network("edm-adm"), tmp_path / "e")
    assert json.loads((tmp_path / "e.json").read_text())["encoder"] is None and load_network(tmp_path / "e").encoder is None


@pytest.mark.parametrize("case, message", [
    ("os.system in the EasyDict", r"refused global posix.system"),
    ("eval in the encoder", r"refused global builtins.eval"),
    ("EasyDict with attributes", r"an EasyDict in the pickle carries attributes"),
    ("object array as scale", r"refused numpy dtype 'O8'"),
    ("unknown encoder", r"unknown encoder 'MyEncoder'; EDM2 writes StandardRGBEncoder or StabilityVAEEncoder"),
    ("scale and bias differ", r"encoder.scale and encoder.bias differ in length \(4 and 3\)"),
    ("huge model_channels", r"_init_kwargs.model_channels is 1000000000; expected an integer from 1 to 4096"),
])
def test_hostile_edm2_pickles_are_refused_and_nothing_runs(tmp_path, case, message):
    marker = tmp_path / "pwned"
    net, kwargs = tiny_edm2("latent"), init_kwargs("latent")
    if case == "os.system in the EasyDict":
        top = edm2_top("latent", net, payload=Evil(os.system, f"touch {marker}"))
    elif case == "eval in the encoder":
        top = edm2_top("latent", net)
        top.items["encoder"].state["batch_size"] = Evil(eval, f"open({str(marker)!r}, 'w')")
    elif case == "EasyDict with attributes":
        top = edm2_top("latent", net)
        top.items["dataset_kwargs"] = EasyDictWithAttributes()
    elif case == "object array as scale":
        top = edm2_top("latent", net)
        top.items["encoder"].state["scale"] = np.array([1.0, "rm -rf"], dtype=object)
    elif case == "unknown encoder":
        top = edm2_top("latent", net)
        top.items["encoder"] = Persistent("MyEncoder")
    elif case == "scale and bias differ":
        top = edm2_top("latent", net)
        top.items["encoder"].state["bias"] = np.zeros(3, np.float32)
    else:
        top, kwargs = edm2_top("latent", net), dict(kwargs, model_channels=10**9)
    path = tmp_path / "edm2-evil.pkl"
    path.write_bytes(edm_pickle_bytes(top, init_kwargs=kwargs, names={"EDM2Precond": "Precond"}))
    with pytest.raises(CheckpointError, match=message) as info:
        load_network(path)
    assert "\n" not in str(info.value) and not marker.exists()


class EasyDictWithAttributes:
    """Pickled as a dnnlib.util.EasyDict that BUILD then gives attributes (EDM2 never writes one)."""

    def __reduce__(self):
        return sys.modules["dnnlib.util"].EasyDict, (), {"__class__": "x"}


def test_plain_edm_pickles_are_unaffected(tmp_path):
    """EDM's files (a plain dict, no encoder) load as before: no encoder, float32, format edm-pickle."""
    from test_edm_pickle import TINY, tiny_network
    path = write_edm_pickle(tmp_path / "e.pkl", {"ema": tiny_network("edm-adm")}, init_kwargs=TINY["edm-adm"][1])
    net = load_network(path)
    assert net.encoder is None and net.stored_dtype == "float32" and net.provenance["source_format"] == "edm-pickle"


def test_build_network_knows_edm2precond(tmp_path):
    """EDM2Precond is in the registry: built by name, saved as a pair and loaded back bit-exactly."""
    from full.store.network_file import build_network, save_network
    torch.manual_seed(0)
    net = build_network("EDM2Precond", **init_kwargs("pixel"))
    assert type(net) is EDM2Precond and net.init_kwargs["sigma_data"] == 0.5  # defaults filled in
    save_network(net, tmp_path / "n")
    loaded = load_network(tmp_path / "n")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(loaded(*inputs("pixel")), net.eval()(*inputs("pixel")))
