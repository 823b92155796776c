"""Teachers given as URLs are downloaded once into the cache, and both files of our format come along."""
import torch

import full
from full.store.network_file import save_network
from full.store.resolve import fetch
from full.train_teacher import TeacherConfig, build_teacher


def test_url_of_our_format_loads_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SID_CACHE", str(tmp_path / "cache"))
    net = build_teacher(TeacherConfig(model_channels=8, channel_mult=(1, 2)), 8, 1, 0)
    (tmp_path / "src").mkdir()
    stem = save_network(net, tmp_path / "src" / "teacher")
    loaded = full.load_network(f"file://{stem}.json")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and cached[0].endswith("teacher.json") and cached[1].endswith("teacher.safetensors")
    # A second fetch reuses the cache even if the source is gone.
    (tmp_path / "src" / "teacher.json").unlink()
    assert fetch(f"file://{stem}.json").exists()


def test_relative_paths_fall_back_to_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fetch("pyproject.toml").is_file()
    assert not fetch("no-such-file.pkl").exists()
