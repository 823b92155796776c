"""full.metrics: Fréchet distance, covariance, Inception Score, precision/recall, stats files, and the CLIs
end to end with a tiny TorchScript detector that mimics the Inception detector's interface."""
import functools
import json
import statistics
import subprocess
import sys

import numpy as np
import pytest
import torch

from full import metrics
from full.eval import fid
from full.eval.detectors import MetricsError
from full.eval.measure import generator_fid
from full.store.network_file import load_network, save_network
from full.store.dataset_zip import write_dataset
from full.method.presets import SiDConfig
from full.train_teacher import TeacherConfig, build_teacher
from in_process import run_main
from test_dataset import png_header_only

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")


def spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def sqrt_psd(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# --------------------------------------------------------------------------------------- Fréchet distance


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_general_matches_eigen_formula():
    """Tr sqrtm(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), the latter symmetric PSD and computed by eigh."""
    rng = np.random.default_rng(1)
    mu1, mu2, s1, s2 = rng.normal(size=6), rng.normal(size=6), spd(rng, 6), spd(rng, 6)
    r = sqrt_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_sample_against_itself_is_zero():
    x = np.random.default_rng(2).normal(size=(500, 16))
    stats = fid.FeatureStats()
    stats.update(x)
    mu, sigma = stats.mean_cov()
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_rejects_mismatched_sizes():
    with pytest.raises(MetricsError, match="same detector"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_batched_statistics_equal_numpy_cov():
    x = np.random.default_rng(3).normal(size=(103, 7)) * 3 + 1e3  # a large offset tests the stable update
    stats = fid.FeatureStats()
    for chunk in np.split(x, [1, 10, 50, 51]):
        stats.update(torch.from_numpy(chunk))
    mu, sigma = stats.mean_cov()
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    assert stats.n == 103


# ------------------------------------------------------------------------------------- Inception Score


def test_inception_score_known_cases():
    assert fid.inception_score(np.full((100, 7), 1 / 7)) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(5)[np.tile(np.arange(5), 20)]  # every split of 10 uses the 5 classes equally
    assert fid.inception_score(one_hot) == pytest.approx((5.0, 0.0))
    # p(y) = (3/4, 1/4); KL = log(4/3) and log(4/3)/2; IS = exp(mean) = (4/3)^(3/4)
    mean, std = fid.inception_score(np.array([[1.0, 0.0], [0.5, 0.5]]), splits=1)
    assert mean == pytest.approx((4 / 3) ** 0.75) and std == 0


def test_inception_score_mean_and_population_std_over_splits():
    probs = np.concatenate([np.full((10, 5), 0.2), np.eye(5)[np.arange(10) % 5]])  # split scores 1 and 5
    assert fid.inception_score(probs, splits=2) == pytest.approx((3.0, 2.0))


# ------------------------------------------------------------------------------------ precision / recall


def test_precision_recall_identical_and_disjoint():
    x = np.random.default_rng(4).normal(size=(200, 8))
    assert fid.precision_recall(x, x.copy(), batch=37) == (1.0, 1.0)
    assert fid.precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_counts_fakes_inside_the_real_manifold():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(300, 4))
    fake = np.concatenate([real[:100], rng.normal(size=(100, 4)) + 50])
    precision, recall = fid.precision_recall(real, fake, batch=64)
    assert precision == 0.5 and 0 < recall < 1
    assert fid.precision_recall(real, fake, batch=1000) == (precision, recall)


# ------------------------------------------------------------------------------------------- stats files


def test_stats_round_trip_and_errors(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    fid.save_stats(tmp_path / "ref.npz", mu, sigma)
    loaded = fid.load_stats(tmp_path / "ref.npz")
    np.testing.assert_array_equal(loaded[0], mu)
    np.testing.assert_array_equal(loaded[1], sigma)
    with pytest.raises(MetricsError, match="not found.*full.metrics ref"):
        fid.load_stats(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(MetricsError, match="not a readable"):
        fid.load_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "keys.npz", mean=mu)
    with pytest.raises(MetricsError, match="lacks the keys mu and sigma"):
        fid.load_stats(tmp_path / "keys.npz")
    np.savez(tmp_path / "shape.npz", mu=mu, sigma=np.eye(2))
    with pytest.raises(MetricsError, match=r"should be \[D\] and \[D, D\]"):
        fid.load_stats(tmp_path / "shape.npz")


# ------------------------------------------------------------------------------------- CLIs end to end


class TinyDetector(torch.nn.Module):
    """Inception-like interface: uint8 3-channel NCHW -> 6-d features, or 4-class probabilities."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(12, 6)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, images: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 2).flatten(1)
        features = torch.tanh(3 * self.proj(x))
        if return_features:
            return features
        logits = features @ self.head.weight.t()
        return (logits if no_output_bias else logits + self.head.bias).softmax(dim=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(TinyDetector().eval()), str(root / "tiny.pt"))
    rng = np.random.default_rng(0)
    images = (rng.uniform(size=(64, 8, 8, 1)) ** 2 * 255).astype(np.uint8)
    write_dataset(root / "data.zip", images, rng.integers(0, 3, 64))
    np.savez(root / "images.npz", images=images)
    teacher = build_teacher(TeacherConfig(model_channels=8, channel_mult=(1, 2), dropout=0.0), 8, 1, 0)
    save_network(teacher, root / "gen")
    return {"root": root, "detector": str(root / "tiny.pt"), "data": str(root / "data.zip"),
            "npz": str(root / "images.npz"), "net": str(root / "gen.json"), "images": images}


run = functools.partial(run_main, metrics.main)


@pytest.fixture(scope="module")
def ref(files):
    dest = files["root"] / "ref.npz"
    assert metrics.main(["ref", "--data", files["data"], "--dest", str(dest), "--detector", files["detector"],
                         "--batch", "10"]) == 0
    return str(dest)


def test_ref_cli_writes_stats_of_detector_features(files, ref):
    detector = torch.jit.load(files["detector"])
    x = torch.from_numpy(files["images"]).permute(0, 3, 1, 2).repeat(1, 3, 1, 1)  # gray -> 3 channels
    with torch.no_grad():
        features = detector(x, return_features=True).double().numpy()
    mu, sigma = fid.load_stats(ref)
    np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-5, atol=1e-9)


def test_calc_images_against_own_reference_is_zero(files, ref, capsys):
    code, out, err = run(capsys, "calc", "--images", files["npz"], "--ref", ref, "--detector", files["detector"],
                         "--num", 64, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert abs(report["fid"]["mean"]) < 1e-6 and report["seeds"] is None
    assert report["is"]["mean"] >= 1 and sum(report["class_histogram"]) == 64


def test_calc_trials_use_disjoint_seed_ranges(files, ref, capsys):
    common = ["--ref", ref, "--detector", files["detector"], "--num", 16, "--batch", 8, "--json"]
    code, out, err = run(capsys, "calc", "--network", files["net"], "--trials", 3, "--seed-start", 5, *common)
    assert code == 0, err
    report = json.loads(out)
    assert report["seeds"] == [[5, 20], [21, 36], [37, 52]]
    values = report["fid"]["values"]
    assert len(set(values)) == 3
    assert report["fid"]["mean"] == pytest.approx(statistics.mean(values))
    assert report["fid"]["std"] == pytest.approx(statistics.stdev(values))
    assert len(report["is"]["values"]) == 3 and len(report["is"]["split_std"]) == 3
    _, out, _ = run(capsys, "calc", "--network", files["net"], "--seed-start", 21, *common)
    assert json.loads(out)["fid"]["values"] == [pytest.approx(values[1])]


def test_generator_fid_matches_calc(files, ref, capsys):
    config = SiDConfig(detector=files["detector"], metric_ref=ref, metric_num=16, batch=8)
    fid = generator_fid(load_network(files["net"]), config)
    _, out, _ = run(capsys, "calc", "--network", files["net"], "--ref", ref, "--detector", files["detector"],
                    "--num", 16, "--json", "--no-is")
    report = json.loads(out)
    assert fid == pytest.approx(report["fid"]["mean"], rel=1e-9) and "is" not in report


def test_calc_teacher_with_precision_recall_prints_summary(files, ref, capsys):
    code, out, err = run(capsys, "calc", "--teacher", files["net"], "--steps", 2, "--ref", ref, "--detector",
                         files["detector"], "--num", 12, "--trials", 2, "--pr-data", files["data"])
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert set(lines) == {"fid", "is", "precision", "recall", "classes"}
    assert "±" in lines["fid"] and 0 <= float(lines["precision"].split()[0]) <= 1


@pytest.mark.parametrize("argv, message", [
    (["--ref", "{root}/missing.npz"], "reference statistics not found"),
    (["--detector", "{root}/inception.pkl"], "inception-2015-12-05.pt"),
    (["--num", "65"], "holds 64 images"),
    (["--detector", "{root}/images.npz"], "not a TorchScript detector"),
    (["--num", "5"], "--no-is"),
])
def test_calc_user_errors_are_one_line(files, ref, capsys, argv, message):
    base = {"--ref": ref, "--detector": files["detector"], "--num": "10"}
    for key, value in zip(argv[::2], argv[1::2]):
        base[key] = value.format(root=files["root"])
    code, out, err = run(capsys, "calc", "--images", files["npz"], *[x for kv in base.items() for x in kv])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_ref_dimension_mismatch_is_reported(files, capsys, tmp_path):
    fid.save_stats(tmp_path / "ref5.npz", np.zeros(5), np.eye(5))
    code, _, err = run(capsys, "calc", "--images", files["npz"], "--num", 10, "--ref", tmp_path / "ref5.npz",
                       "--detector", files["detector"])
    assert code == 2 and "5-d statistics" in err and "6-d features" in err


def test_module_entry_point(files, ref):
    result = subprocess.run([sys.executable, "-m", "full.metrics", "calc", "--images", files["npz"], "--num", "64",
                             "--ref", ref + ".missing", "--detector", files["detector"]], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------- bad inputs


def _calc(files, ref, *argv):
    return ["calc", "--ref", ref, "--detector", files["detector"], *argv]


CALC_MISTAKES = [
    (["--images", "{npz}", "--num", "0"], "argument --num: 0 is not allowed"),
    (["--images", "{npz}", "--num", "1"], "argument --num: 1 is not allowed"),
    (["--images", "{npz}", "--trials", "0"], "argument --trials: 0 is not allowed"),
    (["--images", "{npz}", "--batch", "0"], "argument --batch: 0 is not allowed"),
    (["--images", "{npz}", "--batch", "nan"], "argument --batch: 'nan' is not a whole number"),
    (["--network", "{net}", "--seed-start", "-1"], "argument --seed-start: -1 is not allowed"),
    (["--images", "{npz}", "--device", "bogus"], "--device 'bogus' is not a device"),
    (["--network", "{net}", "--steps", "3"], "--sampler and --steps choose how a --teacher is sampled"),
    (["--images", "{npz}", "--sampler", "64x64"], "they do not apply to --images"),
    (["--teacher", "{net}", "--steps", "0"], "argument --steps: 0 is not allowed"),
    (["--teacher", "{net}", "--sampler", "bogus"], "argument --sampler: invalid choice: 'bogus'"),
    (["--teacher", "{net}", "--sigma-init", "2"], "--sigma-init sets a --network generator's noise level"),
    (["--network", "{net}", "--num", "10", "--trials", "3", "--seed-start", "4294967290"], "needs seeds up to 4294967319"),
    (["--images", "{root}/mixed", "--num", "2", "--no-is"], "all images must share one size"),
    (["--images", "{root}/bomb"], "is 30000x30000"),
]


@pytest.mark.parametrize("argv, needle", CALC_MISTAKES, ids=[" ".join(a[2:]) or a[1] for a, _ in CALC_MISTAKES])
def test_calc_mistakes_are_one_line(files, ref, capsys, argv, needle):
    from PIL import Image
    root = files["root"]
    (root / "mixed").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "mixed" / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "mixed" / "b.png")
    (root / "bomb").mkdir(exist_ok=True)
    (root / "bomb" / "a.png").write_bytes(png_header_only(30000, 30000))
    argv = [a.format(**files) for a in argv]
    code, out, err = run_main(metrics.main, capsys, *_calc(files, ref, "--num", "10", *argv))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


@pytest.mark.parametrize("argv, needle", [
    (["--data", "{root}/not-a-zip.zip"], "is not a zip file"),
    (["--data", "{data}", "--dest", "{root}/no/such/dir/ref.npz"], "--dest"),
    (["--data", "{data}", "--batch", "0"], "argument --batch: 0 is not allowed"),
    (["--data", "{data}", "--device", "tpu"], "--device 'tpu'"),
])
def test_ref_mistakes_write_nothing(files, capsys, argv, needle):
    (files["root"] / "not-a-zip.zip").write_bytes(b"nope")
    dest = files["root"] / "never.npz"
    argv = ["--dest", str(dest), "--detector", files["detector"]] + [a.format(**files) for a in argv]
    code, _, err = run_main(metrics.main, capsys, "ref", *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not dest.exists()


def test_calc_teacher_with_a_sampler_preset(files, ref, capsys):
    code, out, err = run(capsys, *_calc(files, ref, "--teacher", files["net"], "--sampler", "imagenet64", "--steps", 2,
                                        "--num", 10, "--json", "--no-is"))
    assert code == 0, err
    report = json.loads(out)
    assert report["sampler"]["num_steps"] == 2 and report["sampler"]["S_churn"] == 40 and report["fid"]["mean"] > 0
