"""The full-scale SiD trainer on tiny EDM networks (CPU)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from full import distributed
from full.store.network_file import load_network, save_network
from full.method.presets import PRESETS, SiDConfig
from full.method.sid import SiDTrainer
from full.train_teacher import TeacherConfig, build_teacher

CPU = distributed.Ranks(0, 1, torch.device("cpu"))


def tiny_teacher(label_dim=0, resolution=8, seed=0):
    torch.manual_seed(seed)
    net = build_teacher(TeacherConfig(model_channels=8, channel_mult=(1, 2), dropout=0.0), resolution, 1, label_dim)
    # Perturb the zero-initialised output layers so the network is not trivially linear.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    stem = tmp_path_factory.mktemp("teacher") / "teacher"
    save_network(tiny_teacher(), stem, {"kind": "edm-teacher", "trained_on": "tiny"})
    return str(stem) + ".json"


def trainer(**overrides):
    config = SiDConfig(**{"batch": 4, "batch_gpu": 2, "dropout": 0.0, "lr": 1e-3, "glr": 1e-3, **overrides})
    return SiDTrainer(config, tiny_teacher(), CPU)


def test_teacher_is_frozen_and_updates_touch_the_right_networks():
    t = trainer()
    before = {k: v.clone() for k, v in t.f_phi.state_dict().items()}
    g_before = [p.clone() for p in t.G.parameters()]
    psi_before = [p.clone() for p in t.f_psi.parameters()]
    t.fake_step()
    assert all(p.grad is None for p in t.G.parameters()), "the f_psi step must use detached generator samples"
    assert all(torch.equal(a, b) for a, b in zip(g_before, t.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(psi_before, t.f_psi.parameters()))
    psi_after = [p.clone() for p in t.f_psi.parameters()]
    t.generator_step()
    assert all(p.grad is None for p in t.f_psi.parameters()) and all(p.grad is None for p in t.f_phi.parameters())
    assert all(torch.equal(a, b) for a, b in zip(psi_after, t.f_psi.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, t.G.parameters()))
    for _ in range(2):
        t.iteration_step()
    assert all(torch.equal(before[k], v) for k, v in t.f_phi.state_dict().items())
    assert t.iteration == 2 and t.nimg == 8


def test_iteration_runs_fake_then_generator_then_ema(monkeypatch):
    t, order = trainer(), []
    for name in ("fake_step", "generator_step", "ema_step"):
        original = getattr(t, name)
        monkeypatch.setattr(t, name, lambda original=original, name=name: (order.append(name), original())[1])
    t.iteration_step()
    assert order == ["fake_step", "generator_step", "ema_step"]


def test_generator_gradient_through_denoiser_inputs_matches_finite_differences():
    """Directional derivatives of the SiD loss through tiny EDM networks (which compute in fp32):
    autograd against central differences, and against the gradient with the denoisers held fixed."""
    from full.method.losses import SiD, Denoised, sid_normaliser
    f_phi, f_psi = tiny_teacher(seed=1), tiny_teacher(seed=2)
    x_g = torch.randn(2, 1, 8, 8)
    sigma, noise = torch.tensor([0.7, 1.5]), torch.randn_like(x_g)
    x = x_g.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(SiD(1.2)(f_phi, f_psi, x, sigma, noise)["loss"].sum(), x)
    s = sigma.reshape(-1, 1, 1, 1)
    w = sid_normaliser(x_g, f_phi(x_g + s * noise, s))
    loss = lambda v: (SiD(1.2).terms(Denoised(v, f_phi(v + s * noise, s), f_psi(v + s * noise, s)))["loss"] / w).sum().double()
    y_r, y_f = f_phi(x_g + s * noise, s), f_psi(x_g + s * noise, s)
    outputs_fixed = ((y_r - y_f) * (-1) / w.reshape(-1, 1, 1, 1))  # d/dx_g with y_r, y_f held fixed
    for seed in range(3):
        v = torch.randn(x_g.shape, generator=torch.Generator().manual_seed(seed))
        eps = 1e-2
        fd = ((loss(x_g + eps * v) - loss(x_g - eps * v)) / (2 * eps)).item()
        assert (grad * v).sum().item() == pytest.approx(fd, rel=2e-2, abs=1e-4)
        assert abs((outputs_fixed * v).sum().item() - fd) > 0.1 * abs(fd) + 1e-3


def test_toy_and_full_share_the_loss_function():
    import full.method.sid
    import toy.distill
    assert full.method.sid.generator_objective is toy.distill.generator_objective
    assert full.method.sid.DenoisingLoss is toy.distill.DenoisingLoss


def test_nan_samples_are_dropped_and_counted():
    t = trainer()
    total, nans, value = t._masked_sum(torch.tensor([1.0, float("nan"), 2.0, float("inf")]))
    assert nans == 2 and value == 3.0 and total.item() == 3.0
    p = next(t.G.parameters())
    p.grad = torch.zeros_like(p)
    p.grad.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), 1.0])
    bad = t._finish(t.G, t.opt_G, t.scalers["generator"])
    assert bad == 2 and torch.isfinite(p).all()


def test_ema_follows_the_ramp():
    from full.method.ema import ema_beta
    assert ema_beta(256, 0, 0.5) == 0.0
    assert ema_beta(256, 10_000, 0.5) == pytest.approx(0.5 ** (256 / 500))
    assert ema_beta(256, 10 ** 9, 0.5) == pytest.approx(0.5 ** (256 / 5e5))


def train_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "full.train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


TINY = ["--batch", "4", "--batch-gpu", "2", "--dropout", "0", "--lr", "1e-3", "--glr", "1e-3", "--tick", "0.008",
        "--snap", "100", "--state-every", "1", "--grid", "4", "--threads", "1", "--device", "cpu"]


def final_G(outdir):
    states = sorted(f for f in os.listdir(outdir) if f.startswith("training-state"))
    return torch.load(os.path.join(outdir, states[-1]), weights_only=True)["G"]


def test_resume_reproduces_the_uninterrupted_run(teacher_file, tmp_path):
    full = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "a"), "--duration", "0.000016", *TINY)
    assert full.returncode == 0, full.stderr
    part = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "b"), "--duration", "0.000008", *TINY)
    assert part.returncode == 0, part.stderr
    rest = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path / "b"), "--duration", "0.000016", *TINY)
    assert rest.returncode == 0 and "resumed" in rest.stderr + rest.stdout
    a, b = final_G(tmp_path / "a"), final_G(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in open(tmp_path / "b" / "log.jsonl")]
    assert [r["iteration"] for r in log] == [2, 4]
    assert {"kimg", "loss_fake", "loss_G", "sec_per_kimg", "peak_mem_gib", "nan_samples", "nonfinite_grads"} <= set(log[0])


def test_final_snapshot_is_G_ema_and_describes_the_generator(teacher_file, tmp_path):
    run = train_cli("--teacher", teacher_file, "--outdir", str(tmp_path), "--duration", "0.000008", *TINY)
    assert run.returncode == 0, run.stderr
    snapshot = load_network(str(tmp_path / "network-snapshot-000000.008.json"))
    states = sorted(f for f in os.listdir(tmp_path) if f.startswith("training-state"))
    G_ema = torch.load(tmp_path / states[-1], weights_only=True)["G_ema"]
    assert all(torch.equal(snapshot.state_dict()[k], G_ema[k]) for k in G_ema)
    provenance = snapshot.provenance
    assert provenance["kind"] == "sid-generator" and provenance["kimg"] == 0.008 and provenance["sigma_init"] == 2.5
    assert "trained_on" not in provenance and provenance["teacher_provenance"]["trained_on"] == "tiny"
    # The grid shows the snapshot's samples for seeds 0..3, each 8x8 image enlarged 8 times to 64x64.
    from PIL import Image

    from full.eval.sampling import sample_images
    from full.eval.images import to_uint8
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
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert any(not torch.equal(a[k], load_network(teacher_file).state_dict()[k]) for k in a)


def test_crash_while_writing_a_state_keeps_the_previous_one(tmp_path, monkeypatch):
    from full import train
    good = tmp_path / "training-state-000000.008.pt"
    train.atomic_torch_save({"x": torch.ones(3)}, str(good))

    def broken_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        train.atomic_torch_save({"x": torch.zeros(3)}, str(good))
    assert torch.equal(torch.load(good, weights_only=True)["x"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == [good.name]


@pytest.mark.parametrize("preset", [p for p in PRESETS if not p.endswith("cpu")])
def test_dry_run_prints_the_paper_values(preset):
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


def one_line_error(result, needle):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if "it/s" not in line]
    assert needle in lines[-1], result.stderr


def test_bad_inputs_fail_with_one_line(teacher_file, tmp_path):
    one_line_error(train_cli("--teacher", str(tmp_path / "missing.pkl"), "--outdir", str(tmp_path / "r")),
                   "missing.pkl")
    one_line_error(train_cli("--preset", "cifar10-uncond", "--teacher", teacher_file, "--outdir", str(tmp_path / "r")),
                   "is 8x8 but the preset expects 32x32")
    one_line_error(train_cli("--preset", "cifar10-cond", "--teacher", teacher_file, "--resolution", "8",
                             "--outdir", str(tmp_path / "r")), "0 class labels but the preset expects 10")
    one_line_error(train_cli("--preset", "nope", "--dry-run"), "unknown preset")
    one_line_error(train_cli("--bogus-field", "1"), "unrecognized arguments: --bogus-field")
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line_error(train_cli("--teacher", teacher_file, "--outdir", str(blocker / "sub")), "cannot write to --outdir")
    # A state from another architecture in the run directory cannot be resumed.
    run = tmp_path / "other"
    run.mkdir()
    other = SiDTrainer(SiDConfig(batch=4), tiny_teacher(resolution=16), CPU)
    torch.save(other.state_dict(), run / "training-state-000000.004.pt")
    one_line_error(train_cli("--teacher", teacher_file, "--outdir", str(run), "--batch", "4"),
                   "does not fit this teacher's architecture")
    (run / "training-state-000000.004.pt").write_bytes(b"garbage")
    one_line_error(train_cli("--teacher", teacher_file, "--outdir", str(run), "--batch", "4"),
                   "cannot read training state")


@pytest.mark.slow
def test_real_size_cifar10_ddpmpp_completes_one_iteration():
    from full.store.network_file import build_network
    net = build_network("EDMPrecond", img_resolution=32, img_channels=3, label_dim=0, model_type="SongUNet",
                        embedding_type="positional", encoder_type="standard", decoder_type="standard",
                        channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
                        augment_dim=9, dropout=0.13)
    assert sum(p.numel() for p in net.parameters()) == 55_733_891
    t = SiDTrainer(SiDConfig(batch=1), net, CPU)
    stats = t.iteration_step()
    assert t.iteration == 1 and stats.nan_samples == 0 and torch.isfinite(torch.tensor(stats.generator_loss))


def test_ctrl_c_saves_a_whole_iteration_and_resume_reproduces_the_run(teacher_file, tmp_path):
    long = ["--teacher", teacher_file, "--duration", "0.0002", *TINY, "--tick", "0.2", "--snap", "1000",
            "--state-every", "1000"]
    full = train_cli(*long, "--outdir", str(tmp_path / "a"))
    assert full.returncode == 0, full.stderr
    job = subprocess.Popen([sys.executable, "-m", "full.train", *long, "--outdir", str(tmp_path / "b")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bar = ""
    while "img/s" not in bar:  # the progress bar is up, so the Ctrl-C handler is installed
        bar += job.stderr.read(1)
        assert bar or job.poll() is None
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 130 and "interrupted: saving a training state" in out
    assert "Traceback" not in bar + err
    states = sorted(os.listdir(tmp_path / "b"))
    saved = [s for s in states if s.startswith("training-state")]
    assert len(saved) == 1 and saved[0] != "training-state-000000.200.pt"  # stopped before the end
    rest = train_cli(*long, "--outdir", str(tmp_path / "b"))
    assert rest.returncode == 0 and "resumed" in rest.stderr + rest.stdout
    a, b = final_G(tmp_path / "a"), final_G(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
