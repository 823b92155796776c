"""EDM2's pixel and latent spaces (`full.store.latent`): the encoders against EDM2's formulas, the VAE loaded from a
folder (a tiny random AutoencoderKL, never downloaded), latent datasets (`convert-latent`) and their use by SiDA."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from full import distributed
from full.errors import ConfigError, SidError
from full.store.dataset_zip import ImageZipDataset, latent_name, write_dataset, write_latent_dataset
from full.store.latent import (PixelEncoder, VAEEncoder, encoder_for, load_vae, open_encoder,
                               stability_vae_record)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a test that reached the hub would fail, not download


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tiny_latent import save_tiny_vae
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


class AffineVAE(torch.nn.Module):
    """A stand-in decoder with a known map, y = 0.25 x[:, :3] + 0.5, counting its calls (batching)."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def decode(self, z, return_dict=False):
        self.calls.append(len(z))
        return (0.25 * z[:, :3] + 0.5,)


# ------------------------------------------------------------------------------------------------ encoders


def test_edm2_record_scale_and_bias_in_float32():
    record = stability_vae_record()
    raw_mean = np.array([5.81, 3.25, 0.12, -2.15], np.float32)
    raw_std = np.array([4.17, 4.62, 3.71, 3.28], np.float32)
    scale = np.float32(0.5) / raw_std
    assert record["scale"] == [float(v) for v in scale]
    assert record["bias"] == [float(v) for v in np.float32(0) - raw_mean * scale]
    assert record["vae_name"] == "stabilityai/sd-vae-ft-mse" and record["batch_size"] == 8
    from full.store.safe_build import check_encoder
    assert check_encoder(record, "test", "encoder") == record  # what network files accept


def test_pixel_encoder_is_edm_convention():
    enc = encoder_for(None)
    assert isinstance(enc, PixelEncoder) and encoder_for({"kind": "StandardRGBEncoder"}) == enc
    raw = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = enc.encode_dataset_batch(raw)
    assert x.dtype == torch.float32 and torch.equal(x, raw.float() / 127.5 - 1)
    back = enc.decode(x)
    assert back.dtype == torch.uint8 and torch.equal(back, raw)  # 128 + (v - 127.5) truncates back to v
    assert torch.equal(enc.decode(torch.tensor([[[[-2.0, 2.0, 0.0, 0.999]]]])),
                       torch.tensor([[[[0, 255, 128, 255]]]], dtype=torch.uint8))


def test_latent_draw_comes_from_the_given_generator():
    enc = encoder_for(stability_vae_record())
    raw = torch.randn(3, 8, 4, 4)
    raw[:, 4:] = raw[:, 4:].abs()
    got = enc.encode_dataset_batch(raw, torch.Generator().manual_seed(7))
    n = torch.randn((3, 4, 4, 4), generator=torch.Generator().manual_seed(7))
    scale = torch.tensor(enc.scale).reshape(1, -1, 1, 1)
    bias = torch.tensor(enc.bias).reshape(1, -1, 1, 1)
    torch.testing.assert_close(got, (raw[:, :4] + raw[:, 4:] * n) * scale + bias, rtol=0, atol=1e-6)
    assert torch.equal(got, enc.encode_dataset_batch(raw, torch.Generator().manual_seed(7)))
    assert not torch.equal(got, enc.encode_dataset_batch(raw, torch.Generator().manual_seed(8)))


def test_latent_decode_inverts_scale_and_bias_in_batches():
    fake = AffineVAE()
    enc = VAEEncoder("fake", (0.5, 0.25, 2.0, 1.0), (0.1, -0.2, 0.3, 0.0), batch_size=2).with_vae(fake)
    x = torch.randn(5, 4, 3, 3)
    got = enc.decode(x)
    raw = (x - torch.tensor([0.1, -0.2, 0.3, 0.0]).reshape(1, -1, 1, 1)) / torch.tensor([0.5, 0.25, 2.0, 1.0]).reshape(1, -1, 1, 1)
    expected = ((0.25 * raw[:, :3] + 0.5).clamp(0, 1) * 255).to(torch.uint8)  # EDM2: truncation, not rounding
    assert got.dtype == torch.uint8 and torch.equal(got, expected)
    assert fake.calls == [2, 2, 1]


def test_a_latent_network_without_its_vae_is_one_line(vae_dir):
    net = torch.nn.Linear(1, 1)
    net.encoder = stability_vae_record()
    with pytest.raises(ConfigError, match="latent space of the VAE stabilityai/sd-vae-ft-mse; pass --vae"):
        open_encoder(net, None)
    with pytest.raises(ConfigError, match="needs the VAE"):
        encoder_for(net).decode(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ConfigError, match="pixel space and needs no VAE; drop --vae"):
        open_encoder(torch.nn.Linear(1, 1), vae_dir)


# ------------------------------------------------------------------------------------------------ the VAE


def test_vae_loads_from_a_folder_and_encodes_like_diffusers(vae_dir):
    from diffusers import AutoencoderKL
    reference = AutoencoderKL.from_pretrained(vae_dir).eval()
    enc = encoder_for(stability_vae_record(batch_size=3)).with_vae(vae_dir)
    pixels = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    raw = enc.encode_pixels(pixels)
    with torch.no_grad():
        posterior = reference.encode(pixels.float() / 255).latent_dist  # EDM2 feeds the VAE pixels / 255
        decoded = reference.decode((enc.encode_dataset_batch(raw, torch.Generator().manual_seed(0))
                                    - torch.tensor(enc.bias).reshape(1, -1, 1, 1))
                                   / torch.tensor(enc.scale).reshape(1, -1, 1, 1)).sample
    torch.testing.assert_close(raw, torch.cat([posterior.mean, posterior.std], dim=1), rtol=1e-5, atol=1e-5)
    assert raw.shape == (4, 8, 16, 16)
    got = enc.decode(enc.encode_dataset_batch(raw, torch.Generator().manual_seed(0)))
    assert got.shape == (4, 3, 16, 16) and enc.pixel_shape(4, 16) == (3, 16, 16)
    assert (got.int() - (decoded.clamp(0, 1) * 255).to(torch.uint8).int()).abs().max() <= 1
    gray = enc.encode_pixels(pixels[:, :1])  # gray images are repeated to the VAE's three channels
    torch.testing.assert_close(gray, enc.encode_pixels(pixels[:, :1].repeat(1, 3, 1, 1)))


def test_vae_locations_that_cannot_work_are_one_line(tmp_path, vae_dir):
    with pytest.raises(ConfigError, match="no such folder"):
        load_vae(tmp_path / "missing" / "vae")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no config.json"):
        load_vae(tmp_path / "empty")
    other = tmp_path / "eight"
    from diffusers import AutoencoderKL
    AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                  up_block_types=("UpDecoderBlock2D",), latent_channels=8, norm_num_groups=4,
                  layers_per_block=1).save_pretrained(str(other))
    with pytest.raises(ConfigError, match="8 latent channels but the network's encoder has 4"):
        encoder_for(stability_vae_record()).with_vae(str(other))


def test_the_package_imports_and_explains_without_diffusers(tmp_path):
    code = ("import sys; sys.modules['diffusers'] = None\n"
            "import full.store.latent, full.generate, full.metrics, full.train, full.dataset, full.train_teacher\n"
            "from full.errors import ConfigError\n"
            f"try:\n    full.store.latent.load_vae({str(tmp_path)!r})\n"
            "except ConfigError as e:\n    print(e)\n")
    (tmp_path / "config.json").write_text("{}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'sid[latent]'" in out.stdout


# ------------------------------------------------------------------------------------------------ datasets


def test_latent_dataset_is_edm2s_layout_and_streams_back(tmp_path):
    arrays = [np.random.default_rng(i).normal(size=(8, 4, 4)).astype(np.float32) for i in range(3)]
    write_latent_dataset(tmp_path / "l.zip", iter(arrays), [2, 0, 1])
    with zipfile.ZipFile(tmp_path / "l.zip") as zf:
        assert sorted(zf.namelist()) == ["00000/img-mean-std-00000000.npy", "00000/img-mean-std-00000001.npy",
                                         "00000/img-mean-std-00000002.npy", "dataset.json"]
        assert json.loads(zf.read("dataset.json"))["labels"][1] == [latent_name(1), 0]
    data = ImageZipDataset(tmp_path / "l.zip")
    assert (data.kind, data.channels, data.resolution, data.label_dim) == ("npy", 8, 4, 3)
    raw, labels = data.batch([2, 0])
    assert torch.equal(raw, torch.from_numpy(np.stack([arrays[2], arrays[0]])))
    with pytest.raises(SidError, match="latent 1 has shape"):
        write_latent_dataset(tmp_path / "bad.zip", [arrays[0], arrays[0][:, :2, :2]])
    assert not os.path.exists(tmp_path / "bad.zip")  # atomic


def test_convert_latent_encodes_once_and_keeps_labels(tmp_path, vae_dir):
    from full.dataset import main
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 1), dtype=np.uint8)
    write_dataset(tmp_path / "px.zip", images, [1, 0, 2, 1, 0])
    dest = tmp_path / "lat.zip"
    assert main(["convert-latent", "--source", f"zip:{tmp_path / 'px.zip'}", "--dest", str(dest), "--vae", vae_dir,
                 "--resolution", "16", "--batch", "2", "--device", "cpu"]) == 0
    data = ImageZipDataset(dest)
    assert (data.kind, data.channels, data.resolution) == ("npy", 8, 16)
    assert data.labels.tolist() == [1, 0, 2, 1, 0]
    from full.dataset import resize
    enc = encoder_for(stability_vae_record()).with_vae(vae_dir)
    expected = enc.encode_pixels(torch.from_numpy(resize(images, 16)).permute(0, 3, 1, 2))
    torch.testing.assert_close(data.batch(range(5))[0], expected, rtol=1e-5, atol=1e-5)
    # a folder of images, and mistakes: one line, nothing written
    from PIL import Image
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(images[i, :, :, 0]).convert("RGB").save(tmp_path / "imgs" / f"{i}.png")
    assert main(["convert-latent", "--source", f"folder:{tmp_path / 'imgs'}", "--dest", str(tmp_path / "f.zip"),
                 "--vae", vae_dir, "--device", "cpu"]) == 0
    assert ImageZipDataset(tmp_path / "f.zip").resolution == 32 and ImageZipDataset(tmp_path / "f.zip").labels is None
    assert main(["convert-latent", "--source", f"zip:{dest}", "--dest", str(tmp_path / "again.zip"),
                 "--vae", vae_dir]) == 2
    assert main(["convert-latent", "--source", f"zip:{tmp_path / 'px.zip'}", "--dest", str(tmp_path / "n.zip"),
                 "--vae", str(tmp_path / "no-vae")]) == 2
    assert not os.path.exists(tmp_path / "again.zip") and not os.path.exists(tmp_path / "n.zip")


# ------------------------------------------------------------------------------------------------ SiDA on latents


def latent_teacher(label_dim=0):
    from full.nets.architectures import build_edm2_net
    torch.manual_seed(0)
    net = build_edm2_net(4, 4, label_dim, model_channels=8, channel_mult=[1], num_blocks=1, dropout=0.0).eval()
    net.encoder = stability_vae_record()
    return net


def test_sida_reads_latents_in_model_space_reproducibly(tmp_path):
    from full.method.presets import SiDConfig
    from full.method.sid import SiDTrainer
    from full.train import open_data
    arrays = np.abs(np.random.default_rng(0).normal(size=(6, 8, 4, 4))).astype(np.float32)
    write_latent_dataset(tmp_path / "l.zip", arrays, [0, 1, 2, 0, 1, 2])
    teacher = latent_teacher(label_dim=3)
    config = SiDConfig(objective="sida", batch=2, data=str(tmp_path / "l.zip"), vae="unused")
    data = open_data(config, teacher)
    trainer = SiDTrainer(config, teacher, distributed.Ranks(0, 1, torch.device("cpu")), data=data)
    real, labels = trainer.real_batch(4, torch.Generator().manual_seed(3), images=True)
    rng = torch.Generator().manual_seed(3)
    idx = torch.randint(6, (4,), generator=rng)
    n = torch.randn((4, 4, 4, 4), generator=rng)
    enc = encoder_for(teacher)
    x = torch.from_numpy(arrays[idx.numpy()])
    expected = (x[:, :4] + x[:, 4:] * n) * torch.tensor(enc.scale).reshape(1, -1, 1, 1) \
        + torch.tensor(enc.bias).reshape(1, -1, 1, 1)
    torch.testing.assert_close(real, expected, rtol=0, atol=1e-6)
    assert labels.argmax(1).tolist() == [[0, 1, 2, 0, 1, 2][i] for i in idx.tolist()]
    # the dataset kind must match the teacher's space
    write_dataset(tmp_path / "px.zip", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="latent space of stabilityai/sd-vae-ft-mse; give its training set encoded"):
        open_data(SiDConfig(data=str(tmp_path / "px.zip")), teacher)
    pixel_teacher = latent_teacher()
    pixel_teacher.encoder = None
    with pytest.raises(ConfigError, match="arrays \\(latents\\), but the teacher works in pixel space"):
        open_data(SiDConfig(data=str(tmp_path / "l.zip")), pixel_teacher)
