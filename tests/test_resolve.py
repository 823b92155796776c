"""One resolver for where a network is: kinds by name or content, repository fallback, one message when nothing
is there, URLs downloaded once into the cache (pairs stay pairs), and downloads that time out."""
import http.server
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from test_edm_pickle import TINY, tiny_network, write_edm_pickle

import full
from full.errors import CheckpointError, ConfigError, SidError
from full.eval.detectors import load_detector
from full.mnist_classifier import load_classifier
from full.store.network_file import load_network, save_network
from full.store.resolve import PAIR, PICKLE, TORCHSCRIPT, DownloadError, download_timeout, locate

ROOT = Path(__file__).resolve().parents[1]
HINT = "give an EDM .pkl, NAME.safetensors/NAME.json or the stem NAME, or an http(s) URL"


@pytest.fixture
def files(tmp_path):
    """A pair net.json/net.safetensors, an EDM pickle edm.pkl, a pickle named without suffix, a .pt zip."""
    net = tiny_network("edm-adm")
    save_network(net, tmp_path / "net")
    write_edm_pickle(tmp_path / "edm.pkl", {"ema": net}, init_kwargs=TINY["edm-adm"][1])
    shutil.copy(tmp_path / "edm.pkl", tmp_path / "snapshot")
    (tmp_path / "det.pt").write_bytes(b"PK\x03\x04" + bytes(60))  # a zip, as TorchScript files are
    return tmp_path


def test_kinds_by_name_and_content(files):
    for given, kind, path in [("net", PAIR, "net.json"), ("net.json", PAIR, "net.json"),
                              ("net.safetensors", PAIR, "net.json"), ("edm.pkl", PICKLE, "edm.pkl"),
                              ("snapshot", PICKLE, "snapshot"), ("det.pt", TORCHSCRIPT, "det.pt")]:
        found = locate(files / given, "--x", kinds=(PICKLE, PAIR, TORCHSCRIPT))
        assert (found.kind, found.path, found.given, found.what) == (kind, files / path, str(files / given), "--x")
    assert locate(files / "net").weights == files / "net.safetensors"


def test_one_message_when_nothing_is_there(files):
    missing = str(files / "absent")
    for given in (missing, missing + ".pkl", missing + ".json", missing + ".safetensors", f"file://{missing}"):
        with pytest.raises(CheckpointError) as info:
            load_network(given, what="--teacher")
        assert str(info.value) == f"--teacher {given}: no such file; {HINT}"
    for empty in ("", None):
        with pytest.raises(CheckpointError, match=r"^--teacher is empty; give an EDM .pkl"):
            load_network(empty, what="--teacher")


def test_half_a_pair_and_wrong_kinds(files):
    (files / "net.safetensors").rename(files / "lonely.safetensors")
    with pytest.raises(CheckpointError, match=r"--teacher .*lonely.safetensors: missing .*lonely.json; a pair is "
                                              r"NAME.safetensors plus NAME.json"):
        load_network(files / "lonely.safetensors", what="--teacher")
    with pytest.raises(CheckpointError, match=r"--teacher .*det.pt is a TorchScript file, which --teacher does not "
                                              r"take; give an EDM .pkl"):
        load_network(files / "det.pt", what="--teacher")
    (files / "notes").write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes: not a network file"):
        load_network(files / "notes")
    with pytest.raises(SidError, match=r"--detector .*edm.pkl is a pickle, which would run code to load"):
        load_detector(str(files / "edm.pkl"))
    with pytest.raises(CheckpointError, match=r"--classifier .*edm.pkl is an EDM network pickle, which --classifier "
                                              r"does not take; give NAME.safetensors/NAME.json"):
        load_classifier(files / "edm.pkl", what="--classifier")


def test_relative_paths_fall_back_to_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for given in ("assets/mnist16-teacher", "assets/mnist16-teacher.json", "assets/mnist16-teacher.safetensors"):
        found = locate(given)
        assert found.path == ROOT / "assets" / "mnist16-teacher.json"
    assert full.load_network("assets/mnist16-teacher").init_kwargs["img_resolution"] == 16
    assert load_detector("assets/mnist16-classifier").name == "mnist16-classifier"
    assert load_classifier("assets/mnist16-classifier").kwargs["features"] == 128
    os.makedirs("assets")  # a local file of the same name wins over the repository's
    save_network(tiny_network("edm-adm"), tmp_path / "assets" / "mnist16-teacher")
    assert locate("assets/mnist16-teacher").path == Path("assets/mnist16-teacher.json")


def test_file_url_pair_without_suffix_comes_through_the_cache(files, tmp_path, monkeypatch):
    monkeypatch.setenv("SID_CACHE", str(tmp_path / "cache"))
    reference = load_network(files / "net")
    for url in (f"file://{files}/net", f"file://{files}/net.safetensors"):
        loaded = load_network(url, what="--teacher")
        assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), loaded.state_dict().values()))
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and cached[0].endswith("-net.json") and cached[1].endswith("-net.safetensors")
    assert cached[0].split("-")[0] == cached[1].split("-")[0]  # one prefix: the pair stays a pair
    assert load_network(f"file://{files}/edm.pkl").precond_name == "EDMPrecond"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(files):
    """A loopback HTTP server for ``files`` (port chosen by the OS), stopped after the test."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(files)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_url_downloads_once(files, tmp_path, monkeypatch, http_server):
    monkeypatch.setenv("SID_CACHE", str(tmp_path / "cache"))
    first = load_network(f"{http_server}/net", what="--teacher")  # no suffix: a pair's stem
    assert len(list((tmp_path / "cache").iterdir())) == 2
    (files / "net.json").unlink()  # the cache answers from now on
    again = load_network(f"{http_server}/net.json", what="--teacher")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    with pytest.raises(DownloadError, match=r"cannot download http://127.0.0.1:\d+/other.pkl: HTTP error 404 \(File not found\); download "):
        load_network(f"{http_server}/other.pkl")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]


def test_download_times_out_with_one_line(tmp_path, monkeypatch):
    """A server that accepts the connection but never answers: the read times out after SID_DOWNLOAD_TIMEOUT."""
    monkeypatch.setenv("SID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SID_DOWNLOAD_TIMEOUT", "0.5")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/teacher.pkl"
        start = time.perf_counter()
        with pytest.raises(DownloadError) as info:
            load_network(url, what="--teacher")
        assert time.perf_counter() - start < 5
    assert str(info.value) == (f"cannot download {url}: no answer within 0.5 s (set SID_DOWNLOAD_TIMEOUT to wait "
                               "longer); download it yourself and pass the local path")
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("value", ["soon", "0", "-3", "inf", "nan"])
def test_bad_timeout_setting(monkeypatch, value):
    monkeypatch.setenv("SID_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ConfigError, match=f"SID_DOWNLOAD_TIMEOUT='{value}': expected a positive number of seconds"):
        download_timeout()


def test_default_timeout(monkeypatch):
    monkeypatch.delenv("SID_DOWNLOAD_TIMEOUT", raising=False)
    assert download_timeout() == 60
    monkeypatch.setenv("SID_DOWNLOAD_TIMEOUT", "2.5")
    assert download_timeout() == 2.5
