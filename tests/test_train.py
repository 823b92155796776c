"""python -m full.train end to end on a tiny teacher: resume, snapshots, ranks, signals, the run directory,
bad input, presets."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from full.method.presets import PRESETS
from full.method.records import read_log
from full.store.network_file import load_network, save_network
from tiny import tiny_teacher


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    stem = tmp_path_factory.mktemp("teacher") / "teacher"
    save_network(tiny_teacher(), stem, {"kind": "edm-teacher", "trained_on": "tiny"})
    return str(stem) + ".json"


@pytest.fixture(scope="module")
def other_teacher_file(tmp_path_factory):
    stem = tmp_path_factory.mktemp("other") / "teacher"
    save_network(tiny_teacher(seed=5), stem, {"kind": "edm-teacher", "trained_on": "tiny"})
    return str(stem) + ".json"


def train_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "full.train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


TINY = ["--batch", "4", "--batch-gpu", "2", "--dropout", "0", "--lr", "1e-3", "--glr", "1e-3", "--tick", "0.008",
        "--snap", "100", "--state-every", "1", "--grid", "4", "--threads", "1", "--device", "cpu"]


def states(outdir):
    return sorted(f for f in os.listdir(outdir) if f.startswith("training-state"))


def final_G(outdir):
    return torch.load(os.path.join(outdir, states(outdir)[-1]), weights_only=True)["G"]


def one_line_error(result, needle):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if "it/s" not in line and "img/s" not in line]
    assert needle in lines[-1], result.stderr


def test_resume_reproduces_the_uninterrupted_run(teacher_file, tmp_path):
    whole = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "a"), "--duration", "0.000016", *TINY)
    assert whole.returncode == 0, whole.stderr
    part = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "b"), "--duration", "0.000008", *TINY)
    assert part.returncode == 0, part.stderr
    # Bookkeeping (duration, tick, threads) may change on resume; the mathematics may not.
    rest = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "b"), "--duration", "0.000016", *TINY)
    assert rest.returncode == 0 and "resumed" in rest.stderr + rest.stdout
    a, b = final_G(tmp_path / "a"), final_G(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = read_log(tmp_path / "b" / "log.jsonl")
    assert [t.iteration for t in log] == [2, 4]
    assert set(log[0].generator) == {"loss", "L1", "L2"} and set(log[0].fake) == {"loss"}
    assert log[1].seconds > log[0].seconds and log[0].peak_mem_gib > 0
    progress = json.loads((tmp_path / "b" / "progress.json").read_text())
    assert progress["iteration"] == progress["total_iterations"] == 4


def test_init_generator_starts_G_and_G_ema_from_a_distilled_generator(teacher_file, other_teacher_file, tmp_path):
    """SiD²A: G and G_ema load --init-generator, f_psi still starts from the teacher; the snapshot records it."""
    run = train_cli("--teacher", teacher_file, "--init-generator", other_teacher_file, "--outdir", str(tmp_path / "a"),
                    "--duration", "0.000004", *TINY, "--lr", "0", "--glr", "0")
    assert run.returncode == 0, run.stderr
    state = torch.load(tmp_path / "a" / states(tmp_path / "a")[-1], weights_only=True)
    teacher, start = load_network(teacher_file).state_dict(), load_network(other_teacher_file).state_dict()
    for key, value in start.items():   # learning rates 0: G and its EMA are the given generator, f_psi the teacher
        assert torch.equal(state["G"][key], value) and torch.equal(state["G_ema"][key], value)
        assert torch.equal(state["f_psi"][key], teacher[key])
    assert not torch.equal(start[key], teacher[key])
    snapshot = load_network(str(tmp_path / "a" / "network-snapshot-000000.004.json"))
    assert snapshot.provenance["init_generator"] == other_teacher_file
    wrong = tmp_path / "wide"
    save_network(tiny_teacher(resolution=16), wrong, {"kind": "edm-teacher", "trained_on": "tiny"})
    one_line_error(train_cli("--teacher", teacher_file, "--init-generator", str(wrong) + ".json",
                             "--outdir", str(tmp_path / "b"), *TINY), "does not have the teacher's architecture")


def test_final_snapshot_is_G_ema_and_describes_the_generator(teacher_file, tmp_path):
    run = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path), "--duration", "0.000008", *TINY)
    assert run.returncode == 0, run.stderr
    snapshot = load_network(str(tmp_path / "network-snapshot-000000.008.json"))
    G_ema = torch.load(tmp_path / states(tmp_path)[-1], weights_only=True)["G_ema"]
    assert all(torch.equal(snapshot.state_dict()[k], G_ema[k]) for k in G_ema)
    provenance = snapshot.provenance
    assert provenance["kind"] == "sid-generator" and provenance["kimg"] == 0.008 and provenance["sigma_init"] == 2.5
    assert "trained_on" not in provenance and provenance["teacher_provenance"]["trained_on"] == "tiny"
    # The grid shows the snapshot's samples for seeds 0..3, each 8x8 image enlarged 8 times to 64x64.
    from PIL import Image

    from full.eval.images import to_uint8
    from full.eval.sampling import sample_images
    shown = np.asarray(Image.open(tmp_path / "grid-000000.008.png"))
    expected = to_uint8(sample_images(snapshot, [0, 1, 2, 3]))[..., 0]
    assert shown.shape == (128, 128)
    tiles = [shown[r:r + 64:8, c:c + 64:8] for r in (0, 64) for c in (0, 64)]
    assert all(np.abs(t.astype(int) - e).max() <= 1 for t, e in zip(tiles, expected))
    assert (shown.reshape(16, 8, 16, 8) == shown[::8, ::8][:, None, :, None]).all()


def test_two_ranks_match_one_rank_with_accumulation(teacher_file, tmp_path):
    one = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "one"), "--duration", "0.000008", *TINY)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "full.train", "--teacher", teacher_file, "--outdir", str(tmp_path / "two"),
                          "--duration", "0.000008", *TINY], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    a, b = final_G(tmp_path / "one"), final_G(tmp_path / "two")
    # Different processes sum the gradients in another order: equal up to float rounding, not bit for bit.
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert any(not torch.equal(a[k], load_network(teacher_file).state_dict()[k]) for k in a)


def test_a_stop_right_after_a_saved_state_does_not_write_it_again(teacher_file, tmp_path, monkeypatch):
    """A preemption's grace period is short: a stop requested at a tick that has just saved the state (a large
    file at full scale) exits without writing the same state again."""
    from full.method.presets import resolve
    from full.method.records import Tick
    from full.train import Run, RunDirectory, Stopped
    config = resolve(None, {"teacher": teacher_file, "batch": 4, "batch_gpu": 2, "dropout": 0.0, "tick": 0.008,
                            "state_every": 1, "grid": 4, "device": "cpu", "duration": 0.08})
    run = Run(config, str(tmp_path / "run"))
    written = []
    save = RunDirectory.save_state
    monkeypatch.setattr(RunDirectory, "save_state", lambda self, state, tag, keep: written.append(
        (tag, state["iteration"])) or save(self, state, tag, keep))
    with pytest.raises(Stopped):
        for record in run:
            if isinstance(record, Tick):
                run.signals.signum = signal.SIGTERM
    assert written == [("000000.008", 2)] and states(tmp_path / "run") == ["training-state-000000.008.pt"]


def test_crash_while_writing_a_state_keeps_the_previous_one(tmp_path, monkeypatch):
    from full.train import RunDirectory
    directory = RunDirectory(str(tmp_path))
    directory.save_state({"x": torch.ones(3)}, "000000.008", keep=3)
    good = tmp_path / "training-state-000000.008.pt"

    def broken_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        directory.save_state({"x": torch.zeros(3)}, "000000.016", keep=3)
    assert torch.equal(torch.load(good, weights_only=True)["x"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == [good.name]


@pytest.mark.parametrize("preset", [p for p in PRESETS if not p.endswith("cpu")])
def test_dry_run_prints_the_official_values(preset):
    out = train_cli("--preset", preset, "--dry-run")
    assert out.returncode == 0
    config = json.loads(out.stdout)
    for key, value in PRESETS[preset].items():
        assert config[key] == value
    assert config["t_max"] == 800 and config["sigma_init"] == 2.5 and config["lsg"] == 100


def test_paper_table_values():
    assert PRESETS["afhqv2-64"]["alpha"] == 1.0 and PRESETS["afhqv2-64"]["lr"] == 5e-6
    assert PRESETS["imagenet64-cond"]["batch"] == 8192 and PRESETS["imagenet64-cond"]["ema"] == 2.0
    assert PRESETS["ffhq64"]["g_beta1"] == 0.9 and PRESETS["cifar10-cond"]["duration"] == 800


def test_cpu_sida_presets_are_the_readme_runs():
    """The settings behind the README's MNIST SiDA/SiD²A numbers: a change here must come with new runs."""
    from full.method.presets import resolve
    sida, sid2a = resolve("mnist16-sida-cpu", {}), resolve("mnist16-sid2a-cpu", {})
    for c in (sida, sid2a):
        assert (c.objective, c.alpha, c.data, c.lr, c.lsd, c.lsg_gan, c.gan_after_kimg, c.psi_grad_clip) == \
            ("sida", 1.0, "data/mnist16.zip", 1e-4, 10.0, 1.0, 0.0, 1.0)
        assert (c.batch, c.duration, c.teacher, c.sigma_init, c.t_max) == (32, 0.0256, "assets/mnist16-teacher.json",
                                                                           2.5, 800)
    assert (sida.init_generator, sida.glr, sida.g_after_kimg) == ("", 3e-5, 0.0)
    assert (sid2a.init_generator, sid2a.glr, sid2a.g_after_kimg) == ("assets/mnist16-sid.json", 1e-5, 3.2)
    shipped = json.loads((Path(__file__).resolve().parents[1] / "assets" / "mnist16-sid2a.json").read_text())
    assert {k: shipped["provenance"][k] for k in ("preset", "objective", "kimg", "init_generator")} == \
        {"preset": "mnist16-sid2a-cpu", "objective": "sida", "kimg": 25.6, "init_generator": "assets/mnist16-sid.json"}


# ----------------------------------------------------------------------------- bad input: one line, exit 2


@pytest.mark.parametrize("option, value, needle", [
    ("--alpha", "nan", "argument --alpha: nan is not allowed; it must be a finite number"),
    ("--sigma-init", "nan", "argument --sigma-init: nan is not allowed; it must be a finite number"),
    ("--sigma-init", "0", "argument --sigma-init: 0 is not allowed; it must be a number > 0"),
    ("--duration", "inf", "argument --duration: inf is not allowed; it must be a finite number"),
    ("--threads", "-1", "argument --threads: -1 is not allowed; it must be a number >= 0"),
    ("--batch", "0", "argument --batch: 0 is not allowed; it must be a number >= 1"),
    ("--dropout", "1", "argument --dropout: 1 is not allowed; it must be a number >= 0 and < 1"),
    ("--precision", "fp8", "argument --precision: fp8 is not allowed; it must be one of auto, fp32, bf16, fp16"),
    ("--objective", "gan", "argument --objective: gan is not allowed; it must be one of sid, naive"),
    ("--tick", "-2", "argument --tick: -2 is not allowed; it must be a number > 0"),
    ("--batch", "two", "argument --batch: 'two' is not a whole number"),
])
def test_numbers_that_cannot_work_are_refused_when_parsed(option, value, needle):
    result = train_cli(option, value, "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_reference_that_does_not_fit_the_detector_is_refused_before_training(tmp_path):
    from full.eval.fid import save_stats
    stem = tmp_path / "teacher16"
    save_network(tiny_teacher(resolution=16), stem, {"kind": "edm-teacher", "trained_on": "tiny"})
    save_stats(tmp_path / "ref5.npz", np.zeros(5), np.eye(5))  # the shipped MNIST classifier gives 128-d features
    detector = Path(__file__).resolve().parents[1] / "assets" / "mnist16-classifier.json"
    one_line_error(train_cli("--teacher", str(stem) + ".json", "--metric-every", "1", "--metric-ref",
                             str(tmp_path / "ref5.npz"), "--detector", str(detector), "--outdir", str(tmp_path / "r"),
                             *TINY), "--metric-ref " + str(tmp_path / "ref5.npz") + " holds 5-d statistics")
    assert not (tmp_path / "r" / "log.jsonl").exists()
    small = tmp_path / "teacher8"   # the classifier reads 16x16 digits only
    save_network(tiny_teacher(), small, {"kind": "edm-teacher", "trained_on": "tiny"})
    one_line_error(train_cli("--teacher", str(small) + ".json", "--metric-every", "1", "--metric-ref",
                             str(tmp_path / "ref5.npz"), "--detector", str(detector), "--outdir", str(tmp_path / "s"),
                             *TINY), "cannot read 8x8 images with 1 channel(s)")


def test_bad_inputs_fail_with_one_line(teacher_file, tmp_path):
    one_line_error(train_cli("--teacher", str(tmp_path / "missing.pkl"), "--outdir", str(tmp_path / "r")),
                   "missing.pkl")
    one_line_error(train_cli("--preset", "cifar10-uncond", "--teacher", teacher_file, "--outdir", str(tmp_path / "r")),
                   "is 8x8 but the preset expects 32x32")
    one_line_error(train_cli("--preset", "cifar10-cond", "--teacher", teacher_file, "--resolution", "8",
                             "--outdir", str(tmp_path / "r")), "0 class labels but the preset expects 10")
    one_line_error(train_cli("--preset", "nope", "--dry-run"), "unknown preset")
    one_line_error(train_cli("--bogus-field", "1"), "unrecognized arguments: --bogus-field")
    one_line_error(train_cli("--teacher", teacher_file, "--device", "bogus", "--outdir", str(tmp_path / "r")),
                   "--device 'bogus'")
    one_line_error(train_cli("--teacher", teacher_file, "--augment", "0.1", "--outdir", str(tmp_path / "r")),
                   "needs a teacher trained with augmentation")
    one_line_error(train_cli("--teacher", teacher_file, "--objective", "sida", "--outdir", str(tmp_path / "r")),
                   "needs real images: pass --data")
    one_line_error(train_cli("--teacher", teacher_file, "--metric-every", "1", "--metric-ref",
                             str(tmp_path / "none.npz"), "--detector", str(tmp_path / "none.json"),
                             "--outdir", str(tmp_path / "r")), "none")
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line_error(train_cli("--teacher", teacher_file, "--outdir", str(blocker / "sub")), "cannot write to --outdir")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "training-state-000000.004.pt").write_bytes(b"garbage")
    one_line_error(train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "junk"), *TINY),
                   "cannot read training state")


# ----------------------------------------------------------------------------- the run directory


def test_a_run_directory_belongs_to_one_run(teacher_file, other_teacher_file, tmp_path):
    outdir = str(tmp_path / "run")
    first = train_cli("--teacher", teacher_file, "--outdir", outdir, "--duration", "0.000008", *TINY)
    assert first.returncode == 0, first.stderr
    before = {f: os.path.getmtime(os.path.join(outdir, f)) for f in os.listdir(outdir)}
    one_line_error(train_cli("--teacher", teacher_file, "--outdir", outdir, "--resume", "none", "--duration",
                             "0.000008", *TINY), "already holds a run")
    one_line_error(train_cli("--teacher", teacher_file, "--outdir", outdir, "--alpha", "1.0", "--lr", "2e-3",
                             "--duration", "0.000016", *TINY[:6], *TINY[8:]),
                   "alpha 1.2 -> 1.0; lr 0.001 -> 0.002")
    one_line_error(train_cli("--teacher", other_teacher_file, "--outdir", outdir, "--duration", "0.000016", *TINY),
                   "made from another teacher")
    after = {f: os.path.getmtime(os.path.join(outdir, f)) for f in os.listdir(outdir)}
    assert after == before, "a refused start must not touch the run"


def test_leftover_temporary_files_are_removed_at_start_and_a_torn_log_line_is_skipped(teacher_file, tmp_path):
    outdir = tmp_path / "run"
    first = train_cli("--teacher", teacher_file, "--outdir", str(outdir), "--duration", "0.000008", *TINY)
    assert first.returncode == 0, first.stderr
    (outdir / ".training-state-000000.012.pt.abcd.tmp").write_bytes(b"x" * 1000)
    with open(outdir / "log.jsonl", "a") as f:
        f.write('{"tick": 3, "kimg": 0.01')  # a crash in the middle of a line
    assert [t.iteration for t in read_log(outdir / "log.jsonl")] == [2]
    rest = train_cli("--teacher", teacher_file, "--outdir", str(outdir), "--duration", "0.000016", *TINY)
    assert rest.returncode == 0, rest.stderr
    assert not [f for f in os.listdir(outdir) if f.endswith(".tmp")]
    assert [t.iteration for t in read_log(outdir / "log.jsonl")] == [2, 4]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_stop_signals_save_a_whole_iteration_and_resume_reproduces_the_run(teacher_file, tmp_path, signum):
    long = ["--teacher", teacher_file, "--duration", "0.0002", *TINY, "--tick", "0.2", "--snap", "1000",
            "--state-every", "1000"]
    if signum == signal.SIGINT:  # the uninterrupted reference, once
        whole = train_cli(*long, "--outdir", str(tmp_path / "a"))
        assert whole.returncode == 0, whole.stderr
    job = subprocess.Popen([sys.executable, "-m", "full.train", *long, "--outdir", str(tmp_path / "b")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bar = ""
    while "img/s" not in bar:  # the progress bar is up, so the signal handlers are installed
        bar += job.stderr.read(1)
        assert bar or job.poll() is None
    job.send_signal(signum)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 128 + signum, bar + err
    assert f"stopped by {signal.Signals(signum).name}: saved a training state" in err
    assert "Traceback" not in bar + err
    saved = states(tmp_path / "b")
    assert len(saved) == 1 and saved[0] != "training-state-000000.200.pt"  # stopped before the end
    rest = train_cli(*long, "--outdir", str(tmp_path / "b"))
    assert rest.returncode == 0 and "resumed" in rest.stderr + rest.stdout
    if signum == signal.SIGINT:
        a, b = final_G(tmp_path / "a"), final_G(tmp_path / "b")
        assert all(torch.equal(a[k], b[k]) for k in a)
