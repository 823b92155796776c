"""full.train_teacher: streamed training of a tiny teacher, resume, and every user mistake (options, datasets,
foreign training states) as one line with nothing written and earlier files intact."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from full import train_teacher
from full.store.dataset_zip import ImageZipDataset, write_dataset
from full.store.network_file import load_network
from full.train_teacher import TeacherConfig, TeacherTraining, build_teacher
from in_process import assert_one_line_error, run_main
from test_edm_pickle import Evil

TINY = ["--model-channels", "8", "--channel-mult", "1,2", "--batch", "16", "--threads", "2", "--warmup-kimg", "0.1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    write_dataset(root / "labelled.zip", images, np.arange(40) % 3)
    write_dataset(root / "plain.zip", images[:8])
    return {"labelled": str(root / "labelled.zip"), "plain": str(root / "plain.zip")}


def cli(capsys, *argv):
    return run_main(train_teacher.main, capsys, *argv)


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes."""
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read() for d, _, files in os.walk(folder) for f in files}


# ------------------------------------------------------------------------------------------------ training


def test_trains_streamed_and_resumes(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ImageZipDataset, "all_images", lambda self, *a: pytest.fail("the dataset was loaded whole"))
    outdir = tmp_path / "run"
    code, out, err = cli(capsys, "--data", data["labelled"], "--outdir", outdir, "--kimg", "0.032",
                         "--conditional", "true", *TINY)
    assert code == 0, err
    teacher = load_network(outdir / "teacher.json")
    assert (teacher.img_resolution, teacher.img_channels, teacher.label_dim) == (8, 1, 3)
    assert teacher.provenance["kimg"] == 0.032
    state = torch.load(outdir / "training-state.pt", weights_only=True)
    assert state["nimg"] == 32 and state["config"]["model_channels"] == 8
    code, out, err = cli(capsys, "--data", data["labelled"], "--outdir", outdir, "--kimg", "0.048",
                         "--conditional", "true", *TINY)
    assert code == 0, err
    assert torch.load(outdir / "training-state.pt", weights_only=True)["nimg"] == 48
    assert len((outdir / "log.jsonl").read_text().splitlines()) == 2
    code, out, err = cli(capsys, "--data", data["labelled"], "--outdir", outdir, "--kimg", "0.016",
                         "--conditional", "true", *TINY)
    assert code == 0 and "already at 0.048 kimg" in out


def test_resumed_run_follows_the_uninterrupted_one(data, tmp_path):
    config = TeacherConfig(data=data["plain"], model_channels=8, channel_mult=(1, 2), batch=8, kimg=0.032,
                           dropout=0.0, warmup_kimg=0.0)
    straight = TeacherTraining(config, str(tmp_path / "a"))
    os.makedirs(tmp_path / "a")
    list(straight)
    os.makedirs(tmp_path / "b")
    list(TeacherTraining(TeacherConfig(**{**config.__dict__, "kimg": 0.016}), str(tmp_path / "b")))
    resumed = TeacherTraining(config, str(tmp_path / "b"))
    assert resumed.nimg == 16
    list(resumed)
    for key, value in straight.ema.state_dict().items():
        assert torch.allclose(value, resumed.ema.state_dict()[key], atol=1e-5), key


def test_build_teacher_is_edm_ddpmpp():
    net = build_teacher(TeacherConfig(model_channels=8, channel_mult=(1, 2)), 8, 1, 0)
    kwargs = net.init_kwargs
    assert (kwargs["model_type"], kwargs["embedding_type"], kwargs["encoder_type"], kwargs["resample_filter"]) == \
        ("SongUNet", "positional", "standard", [1, 1])
    assert (kwargs["model_channels"], kwargs["channel_mult"], kwargs["num_blocks"]) == (8, [1, 2], 1)
    adm = build_teacher(TeacherConfig(arch="adm", model_channels=8, channel_mult=(1, 2)), 8, 1, 0)
    assert adm.init_kwargs["model_type"] == "DhariwalUNet"


# ------------------------------------------------------------------------------------------------ mistakes


PARSE_MISTAKES = [
    (["--batch", "0"], "argument --batch"), (["--batch", "-2"], "argument --batch"),
    (["--model-channels", "0"], "argument --model-channels"), (["--kimg", "-1"], "argument --kimg"),
    (["--kimg", "0"], "argument --kimg"), (["--kimg", "nan"], "argument --kimg"),
    (["--kimg", "inf"], "argument --kimg"), (["--lr", "0"], "argument --lr"),
    (["--threads", "-1"], "argument --threads"), (["--channel-mult", "1,0"], "argument --channel-mult"),
    (["--num-blocks", "0"], "argument --num-blocks"), (["--dropout", "1"], "argument --dropout"),
    (["--arch", "unet"], "argument --arch"),
    (["--warmup-kimg", "-0.5"], "argument --warmup-kimg"), (["--seed", "-1"], "argument --seed"),
]


@pytest.mark.parametrize("argv, needle", PARSE_MISTAKES, ids=[" ".join(a) for a, _ in PARSE_MISTAKES])
def test_option_mistakes_stop_at_parse_time(data, tmp_path, capsys, argv, needle):
    outdir = tmp_path / "run"
    code, out, err = cli(capsys, "--data", data["labelled"], "--outdir", outdir, *argv)
    assert_one_line_error((code, out, err), needle, "(see python -m full.train_teacher --help)")
    what_works = {"--kimg": "finite number" if argv[1] in ("nan", "inf") else "> 0", "--arch": "ddpmpp, ncsnpp, adm"}
    assert what_works.get(argv[0], "must be") in err
    assert not outdir.exists()


CHECKED_MISTAKES = [
    (["--model-channels", "33"], "--model-channels 33 with --channel-mult 1,2,2 gives a 33-channel layer"),
    (["--attn-resolutions", "3"], "--attn-resolutions 3 is not a level of this network; its levels are 8, 4, 2"),
    (["--channel-mult", "1,2,2,2,2"], "--channel-mult 1,2,2,2,2 has 5 levels, but a 8x8 image can be halved only 3 times"),
    (["--channel-mult", ","], "--channel-mult needs at least one multiplier"),
    (["--data", "{plain}", "--conditional", "true"], "--conditional true needs class labels, but --data"),
    (["--data", "{root}/missing.zip"], "--data {root}/missing.zip not found"),
    (["--data", "{root}/plain.zip/inner.zip"], "not found"),
    (["--data", ""], "--data is required"),
    (["--seed", str(2 ** 64)], f"--seed {2 ** 64} is too large"),
]


@pytest.mark.parametrize("argv, needle", CHECKED_MISTAKES, ids=[" ".join(a) for a, _ in CHECKED_MISTAKES])
def test_checked_mistakes_write_nothing(data, tmp_path, capsys, argv, needle):
    root = os.path.dirname(data["plain"])
    outdir = tmp_path / "run"
    argv = [a.format(root=root, **data) for a in argv]
    assert_one_line_error(cli(capsys, "--data", data["labelled"], "--outdir", outdir, *argv), needle.format(root=root))
    assert not outdir.exists()


def test_not_a_zip_is_one_line(tmp_path, capsys):
    (tmp_path / "fake.zip").write_bytes(b"PK but not really a zip")
    assert_one_line_error(cli(capsys, "--data", tmp_path / "fake.zip", "--outdir", tmp_path / "run"), "is not a zip file")
    assert not (tmp_path / "run").exists()


def code(p) -> Evil:
    """A pickled call that would create `pwned` beside `p` (the run directory, which the test snapshots)."""
    return Evil(os.system, f"touch {p.parent / 'pwned'}")


def _states(data, tmp_path_factory):
    """A real training state, and the foreign or damaged variants users meet."""
    root = tmp_path_factory.mktemp("states")
    config = TeacherConfig(data=data["plain"], model_channels=8, channel_mult=(1, 2), batch=8, kimg=0.008)
    os.makedirs(root / "real")
    list(TeacherTraining(config, str(root / "real")))
    return torch.load(root / "real" / "training-state.pt", weights_only=True), \
        (root / "real" / "training-state.pt").read_bytes()


@pytest.fixture(scope="module")
def real_state(data, tmp_path_factory):
    return _states(data, tmp_path_factory)


def _drop_last(weights):
    return dict(list(weights.items())[:-1])


FOREIGN = {
    "random bytes": (lambda s, raw, p: p.write_bytes(os.urandom(2000)), "is not a readable training state"),
    "empty file": (lambda s, raw, p: p.write_bytes(b""), "is not a readable training state"),
    "truncated": (lambda s, raw, p: p.write_bytes(raw[: len(raw) // 2]), "is not a readable training state"),
    "code-running pickle": (lambda s, raw, p: p.write_bytes(pickle.dumps(code(p))), "is not a readable training state"),
    "torch file with code": (lambda s, raw, p: torch.save({"net": code(p)}, p), "is not a readable training state"),
    "a list": (lambda s, raw, p: torch.save([1, 2, 3], p), "it lacks ema, net, nimg, opt, rng"),
    "missing weight": (lambda s, raw, p: torch.save({**s, "net": _drop_last(s["net"])}, p), "(net) lacks model."),
    "wrong shape": (lambda s, raw, p: torch.save({**s, "ema": {k: v.reshape(-1)[:1] if v.ndim else v
                                                               for k, v in s["ema"].items()}}, p),
                    "(ema): model."),
    "other architecture": (lambda s, raw, p: torch.save({**s, "config": {**s["config"], "model_channels": 16}}, p),
                           "was written with --model-channels 16, not 8"),
    "other arch, no config": (lambda s, raw, p: torch.save({k: v for k, v in s.items() if k != "config"}
                                                           | {"net": {"x." + k: v for k, v in s["net"].items()}}, p),
                              "(net) lacks model."),
    "bad optimiser": (lambda s, raw, p: torch.save({**s, "opt": {"state": {}, "param_groups": []}}, p),
                      "optimiser state does not match"),
    "bad rng": (lambda s, raw, p: torch.save({**s, "rng": torch.zeros(3)}, p), "random-number state"),
    "bad count": (lambda s, raw, p: torch.save({**s, "nimg": -8}, p), "image count -8"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", FOREIGN)
def test_foreign_training_state_is_one_line_and_kept(data, real_state, tmp_path, capsys, case):
    state, raw = real_state
    outdir = tmp_path / "run"
    outdir.mkdir()
    write, needle = FOREIGN[case]
    write(state, raw, outdir / "training-state.pt")
    before = snapshot(outdir)
    assert_one_line_error(cli(capsys, "--data", data["plain"], "--outdir", outdir, "--model-channels", "8",
                         "--channel-mult", "1,2", "--batch", "8", "--kimg", "0.032"), needle, "training-state.pt")
    assert snapshot(outdir) == before


def test_module_entry_point(data, tmp_path):
    result = subprocess.run([sys.executable, "-m", "full.train_teacher", "--data", data["labelled"], "--outdir",
                             str(tmp_path / "run"), "--batch", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--batch" in result.stderr
    assert not (tmp_path / "run").exists()
