"""FD-DINOv2 (EDM2's second metric): EDM2's DINOv2 preprocessing against independent computations, and the metrics
CLI reporting fd_dinov2 beside FID, with tiny TorchScript stand-ins for both feature networks."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from full import metrics
from full.eval import fid
from full.eval.detectors import DINOV2_MEAN, DINOV2_STD, MetricsError, dinov2_preprocess, load_dinov2
from full.store.dataset_zip import write_dataset
from test_edm2_path import PoolDetector
from test_edm_pickle import Evil

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")


def test_preprocessing_of_a_flat_image_is_the_normalised_colour():
    colour = torch.tensor([10, 128, 250], dtype=torch.uint8)
    images = colour.reshape(1, 3, 1, 1).expand(2, 3, 37, 37)
    x = dinov2_preprocess(images)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    for c in range(3):
        expected = (colour[c].item() / 255 - DINOV2_MEAN[c]) / DINOV2_STD[c]
        torch.testing.assert_close(x[:, c], torch.full((2, 224, 224), expected), rtol=0, atol=1e-5)


def test_preprocessing_matches_pil_bicubic_resize():
    """EDM2's 'torch' resize mode against its slow 'pil' reference (PIL bicubic to 224x224) on a smooth image."""
    yy, xx = np.mgrid[0:64, 0:64] / 63
    image = np.stack([255 * xx, 255 * yy, 127 + 100 * np.sin(3 * xx + 2 * yy)], axis=-1).round().astype(np.uint8)
    reference = np.asarray(Image.fromarray(image, "RGB").resize((224, 224), Image.Resampling.BICUBIC), np.float32)
    reference = (reference / 255 - np.array(DINOV2_MEAN)) / np.array(DINOV2_STD)
    got = dinov2_preprocess(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    inner = (slice(8, -8), slice(8, -8))  # borders differ by the two libraries' edge handling
    assert np.abs(got[inner] - reference[inner]).max() < 0.05  # ~ 1/90 of the normalised range


class TinyDINO(torch.nn.Module):
    """DINOv2's interface: normalised float [N, 3, 224, 224] -> [N, 8] features."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(48, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(TinyDINO().eval()), str(root / "dino.pt"))
    torch.jit.save(torch.jit.script(PoolDetector().eval()), str(root / "inception.pt"))
    rng = np.random.default_rng(0)
    images = (rng.uniform(size=(40, 8, 8, 3)) ** 2 * 255).astype(np.uint8)
    write_dataset(root / "data.zip", images)
    np.savez(root / "images.npz", images=images)
    np.savez(root / "other.npz", images=255 - images)
    return root, images


def test_ref_and_calc_report_fd_dinov2(files, capsys):
    root, images = files
    assert metrics.main(["ref", "--data", str(root / "data.zip"), "--dest", str(root / "ref.npz"), "--detector",
                         str(root / "inception.pt"), "--detector-dinov2", str(root / "dino.pt"), "--dest-dinov2",
                         str(root / "ref-dino.npz"), "--batch", "16", "--device", "cpu"]) == 0
    capsys.readouterr()
    # the reference is the stand-in's features of EDM2's preprocessing, computed independently here
    net = torch.jit.load(str(root / "dino.pt"))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", antialias=True) / 255
    x = (x - torch.tensor(DINOV2_MEAN).reshape(1, 3, 1, 1)) / torch.tensor(DINOV2_STD).reshape(1, 3, 1, 1)
    with torch.no_grad():
        features = net(x).double().numpy()
    mu, sigma = fid.load_stats(root / "ref-dino.npz")
    np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-4, atol=1e-7)
    common = ["calc", "--ref", str(root / "ref.npz"), "--detector", str(root / "inception.pt"), "--detector-dinov2",
              str(root / "dino.pt"), "--ref-dinov2", str(root / "ref-dino.npz"), "--num", "40", "--no-is", "--json",
              "--device", "cpu"]
    assert metrics.main(common + ["--images", str(root / "images.npz")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["fd_dinov2"]["mean"]) < 1e-6 and abs(report["fid"]["mean"]) < 1e-6
    assert metrics.main(common + ["--images", str(root / "other.npz")]) == 0
    report = json.loads(capsys.readouterr().out)
    other = torch.from_numpy(255 - images).permute(0, 3, 1, 2)
    with torch.no_grad():
        f2 = load_dinov2(root / "dino.pt").features(other).numpy()
    expected = fid.frechet_distance(f2.mean(0), np.cov(f2, rowvar=False), mu, sigma)
    assert report["fd_dinov2"]["mean"] == pytest.approx(expected, rel=1e-6) and expected > 1e-3
    # both options or neither; no pickles
    i = common.index("--ref-dinov2")
    assert metrics.main(common[:i] + common[i + 2:] + ["--images", str(root / "images.npz")]) == 2
    assert "--detector-dinov2 and --ref-dinov2 go together" in capsys.readouterr().err
    with pytest.raises(MetricsError, match="not TorchScript"):
        load_dinov2(root / "dino.pkl")


def test_edm2_reference_pickles_are_read_without_running_code(files, tmp_path):
    import pickle

    from full.eval.measure import load_reference
    rng = np.random.default_rng(1)
    stats = {"num_images": 40, "fid": {"mu": rng.normal(size=3), "sigma": np.eye(3)},
             "fd_dinov2": {"mu": rng.normal(size=8).astype(np.float32), "sigma": 2 * np.eye(8)}}
    with open(tmp_path / "img.pkl", "wb") as f:
        pickle.dump(stats, f)  # what NVlabs/edm2 calculate_metrics.py save_stats writes
    mu, sigma = load_reference(str(tmp_path / "img.pkl"), "fd_dinov2")
    np.testing.assert_array_equal(mu, stats["fd_dinov2"]["mu"].astype(np.float64))
    np.testing.assert_array_equal(sigma, 2 * np.eye(8))
    assert load_reference(str(tmp_path / "img.pkl"))[0].tolist() == stats["fid"]["mu"].tolist()
    from full.eval.measure import cached_stats  # training's --metric-ref reads the same files
    assert cached_stats(str(tmp_path / "img.pkl"))[0].tolist() == stats["fid"]["mu"].tolist()
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"fid": Evil(os.system, f"touch {tmp_path / 'pwned'}")}, f)
    with pytest.raises(MetricsError, match="refused global"):
        load_reference(str(tmp_path / "evil.pkl"))
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / "one.pkl", "wb") as f:
        pickle.dump({"fid": stats["fid"]}, f)
    with pytest.raises(MetricsError, match="holds no fd_dinov2 statistics"):
        load_reference(str(tmp_path / "one.pkl"), "fd_dinov2")
