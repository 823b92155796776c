"""Our safetensors + json checkpoints, conversion from EDM pickles, atomic saves and the CLI."""
import json
import os
import subprocess
import sys

import pytest
import safetensors.torch
import torch
from test_edm_pickle import TINY, Evil, network_inputs, tiny_network, write_edm_pickle

from full import checkpoint
from full.store.network_file import build_network, load_network, save_network
from full.errors import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_same_network(a, b, outputs=True):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    if outputs:
        with torch.no_grad():
            assert torch.equal(a(*network_inputs(a)), b(*network_inputs(b)))


@pytest.mark.parametrize("name", ["edm-ddpmpp-cond", "iddpm-adm"])
def test_safetensors_round_trip_is_bit_exact(tmp_path, name):
    net = tiny_network(name)
    stem = save_network(net, tmp_path / "net.safetensors", provenance={"preset": "tiny"})
    assert stem == str(tmp_path / "net")
    meta = json.loads((tmp_path / "net.json").read_text())
    precond, passed = TINY[name]
    assert meta["format"] == "sid-network" and meta["version"] == 1 and meta["precond"] == precond
    assert meta["precond_kwargs"].items() >= passed.items()
    assert (meta["resolution"], meta["channels"], meta["architecture"]) == (8, 1, passed["model_type"])
    assert meta["label_dim"] == passed.get("label_dim", 0) and meta["provenance"]["preset"] == "tiny"
    for path in ("net", "net.safetensors", "net.json"):
        loaded = load_network(tmp_path / path, device="cpu")
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        assert_same_network(loaded, net, outputs=path == "net")
    assert sorted(os.listdir(tmp_path)) == ["net.json", "net.safetensors"]


def test_convert_keeps_provenance(tmp_path):
    net = tiny_network("edm-adm")
    pkl = write_edm_pickle(tmp_path / "network-snapshot-000512.pkl", {"ema": net}, init_kwargs=TINY["edm-adm"][1])
    save_network(load_network(pkl), tmp_path / "out", provenance={"preset": "x"})
    loaded = load_network(tmp_path / "out")
    assert_same_network(loaded, net, outputs=False)
    assert loaded.provenance["source"] == pkl and loaded.provenance["kimg"] == 512
    assert loaded.provenance["preset"] == "x" and len(loaded.provenance["sha256"]) == 64


def test_full_load_network_is_lazy():
    code = ("import sys, full, full.method.losses; assert 'full.store.network_file' not in sys.modules; "
            "full.load_network; assert 'full.store.network_file' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


ADM = TINY["edm-adm"][1]


@pytest.mark.parametrize("name, overrides, message", [
    ("edm-adm", dict(class_name="FancyPrecond"), "unknown preconditioner 'FancyPrecond'"),
    ("edm-adm", dict(init_kwargs=dict(ADM, model_channels=8)), r"model\.\S+ has shape \[64, 16\], expected \[32, 8\]"),
    ("edm-adm", dict(init_kwargs=dict(ADM, label_dim=0)), r"unexpected entry model\.map_label\.weight"),
    ("iddpm-adm", dict(init_kwargs=dict(TINY["iddpm-adm"][1], label_dim=3)), r"lacks model\.map_label\.weight"),
    ("edm-adm", dict(init_kwargs=dict(ADM, warp_factor=9)), "_init_kwargs.warp_factor is not an argument of EDMPrecond"),
])
def test_pickle_that_does_not_match_our_class(tmp_path, name, overrides, message):
    path = write_edm_pickle(tmp_path / "bad.pkl", {"ema": tiny_network(name)}, **overrides)
    with pytest.raises(CheckpointError, match=message):
        load_network(path)


def test_bad_checkpoint_files(tmp_path):
    net = tiny_network("edm-adm")
    save_network(net, tmp_path / "a")
    save_network(net, tmp_path / "b")
    os.replace(tmp_path / "b.safetensors", tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="different saves"):
        load_network(tmp_path / "a")
    with pytest.raises(CheckpointError, match="missing .*b.safetensors"):
        load_network(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"format": "something-else"}')
    (tmp_path / "c.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a sid-network description"):
        load_network(tmp_path / "c")
    with pytest.raises(CheckpointError, match="no such file"):
        load_network(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no recorded constructor arguments"):
        save_network(torch.nn.Linear(2, 2), tmp_path / "d")
    with pytest.raises(CheckpointError, match="unknown preconditioner"):
        build_network("NoSuchPrecond", img_resolution=8, img_channels=1)


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    good = tiny_network("edm-adm", seed=0)
    save_network(good, tmp_path / "net")
    files = {name: (tmp_path / name).read_bytes() for name in ("net.json", "net.safetensors")}

    def crash_mid_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_network(tiny_network("edm-adm", seed=1), tmp_path / "net")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["net.json", "net.safetensors"]
    assert all((tmp_path / name).read_bytes() == data for name, data in files.items())
    assert_same_network(load_network(tmp_path / "net"), good, outputs=False)

    real_replace, calls = os.replace, []

    def replace_then_crash(src, dst):  # the weights are renamed into place, then the json rename fails
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_crash)
    with pytest.raises(OSError):
        save_network(tiny_network("edm-adm", seed=1), tmp_path / "net")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["net.json", "net.safetensors"]
    assert (tmp_path / "net.json").read_bytes() == files["net.json"]
    with pytest.raises(CheckpointError, match="different saves"):  # a mixed pair is detected, never used
        load_network(tmp_path / "net")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "full.checkpoint", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_cli_inspect_and_convert(tmp_path, capsys):
    net = tiny_network("edm-ddpmpp-cond")
    pkl = write_edm_pickle(tmp_path / "edm-tiny.pkl", {"ema": net}, init_kwargs=TINY["edm-ddpmpp-cond"][1])
    done = run_cli("convert", pkl, tmp_path / "tiny.safetensors", "--preset", "tiny-cifar")
    assert done.returncode == 0, done.stderr
    assert_same_network(load_network(tmp_path / "tiny"), net, outputs=False)
    done = run_cli("inspect", tmp_path / "tiny", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["preconditioner"] == "EDMPrecond" and info["architecture"] == "SongUNet"
    assert (info["resolution"], info["channels"], info["label_dim"]) == (8, 1, 3)
    assert info["parameters"] == sum(p.numel() for p in net.parameters())
    assert info["provenance"]["preset"] == "tiny-cifar" and info["provenance"]["source"] == pkl
    assert checkpoint.main(["inspect", pkl]) == 0
    out = capsys.readouterr().out
    assert f"{info['parameters']:,}" in out and "SongUNet" in out and "kimg" not in out


def test_cli_missing_file_is_one_line_without_traceback(tmp_path):
    done = run_cli("inspect", tmp_path / "absent.pkl")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr == f"error: FILE {tmp_path / 'absent.pkl'}: no such file; give an EDM .pkl, " \
                          "NAME.safetensors/NAME.json or the stem NAME, or an http(s) URL\n"


@pytest.mark.parametrize("case", ["malicious", "garbage", "wrong-json", "huge-kwargs-json", "missing"])
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, case):
    path = tmp_path / "x.pkl"
    if case == "malicious":
        write_edm_pickle(path, {"ema": Evil(os.system, f"touch {tmp_path / 'pwned'}")})
    elif case == "garbage":
        path.write_bytes(b"\x80\x04not a pickle at all")
    elif case == "huge-kwargs-json":
        path = tmp_path / "x.json"
        save_network(tiny_network("edm-adm"), tmp_path / "x")
        meta = json.loads(path.read_text())
        meta["precond_kwargs"]["model_channels"] = 10**9
        path.write_text(json.dumps(meta))
    elif case == "missing":
        path = tmp_path / "absent"
    else:
        path = tmp_path / "x.json"
        path.write_text("{not json")
        (tmp_path / "x.safetensors").write_bytes(b"")
    assert checkpoint.main(["convert", str(path), str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    if case in ("huge-kwargs-json", "missing"):
        assert err == {"huge-kwargs-json": f"error: {path}: precond_kwargs.model_channels is 1000000000; expected an "
                                           "integer from 1 to 4096\n",
                       "missing": f"error: INPUT {path}: no such file; give an EDM .pkl, NAME.safetensors/NAME.json "
                                  "or the stem NAME, or an http(s) URL\n"}[case]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out.json").exists()
