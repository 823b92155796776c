"""The alpha study (toy.alpha_study): its plumbing on a tiny plan, the d-dimensional targets, the fitted teacher."""
import dataclasses
import json
import math

import pytest
import torch

from full.errors import ConfigError
from full.method.losses import DenoisingLoss
from toy import alpha_study
from toy.alpha_study import (PRESETS, RunRecord, StudyPlan, compare, diverged, final_distance, load_records, make_plan,
                             run_study, save_records, study_document, write_outputs)
from toy.metrics import steps_to_threshold
from toy.distill import ToyConfig, ToyDistillation, fit_teacher, fitted_teacher
from toy.families import GaussianMixture
from toy.metrics import energy_distance, energy_floor
from toy.montecarlo import autograd_score
from toy.targets import make_target, random_mixture

pytestmark = pytest.mark.usefixtures("single_thread")  # the study runs every fit and run on one thread; so do these


TINY = ToyConfig(generator="mlp", loss="sid", steps=12, batch=32, hidden=16, fake_steps=1, fake_warmup=4,
                 eval_every=4, eval_samples=64, teacher_steps=10, teacher_hidden=16, teacher_batch=32)


def tiny_plan(alphas=(0.5, 1.2), seeds=(0, 1)) -> StudyPlan:
    fitted = dataclasses.replace(TINY, target="gmm3d", teacher="fitted")
    return make_plan(TINY, alphas=alphas, seeds=seeds, dims=(2, 3), side_target="gmm3d", fitted=fitted, ks=(1, 2))


# --------------------------------------------------------------------------- steps to threshold and verdicts


def test_steps_to_threshold_on_a_hand_made_curve():
    steps, curve = [50, 100, 150, 200, 250], [1.0, 0.2, 0.05, 0.3, 0.04]
    assert steps_to_threshold(steps, curve, 0.1) == 150      # the first evaluation at or below, not the last
    assert steps_to_threshold(steps, curve, 0.05) == 150     # "at or below"
    assert steps_to_threshold(steps, curve, 0.045) == 250
    assert steps_to_threshold(steps, curve, 0.01) is None
    assert steps_to_threshold(steps, curve, 2.0) == 50
    assert final_distance(curve, 2) == pytest.approx((0.3 + 0.04) / 2)
    assert final_distance(curve, 10) == pytest.approx(sum(curve) / 5)
    assert final_distance([0.1, math.nan], 2) == math.inf


def test_divergence_means_ending_far_worse_than_early():
    assert not diverged([1.0, 0.2, 0.05], threshold=0.01, final=0.05)
    assert not diverged([0.02, 0.01, 0.05], threshold=0.01, final=0.05)     # jitter near the floor
    assert diverged([0.02, 5.0, 300.0], threshold=0.01, final=300.0)
    assert diverged([1.0, 0.5], threshold=0.01, final=math.inf)


def test_compare_pairs_seeds_and_needs_a_consistent_difference():
    assert compare([1.0, 1.1, 0.9], [0.5, 0.55, 0.45]) == "helps"
    assert compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]) == "hurts"
    assert compare([1.0, 1.5, 0.5], [0.9, 1.4, 0.4]) == "helps"              # paired: every seed gains 0.1
    assert compare([1.0, 1.5, 0.5], [0.9, 1.6, 0.4]) == "no clear difference"  # one seed disagrees
    assert compare([1.0, 1.0, 1.0], [0.999, 0.9, 0.8]) == "no clear difference"  # same sign, within 2 SE
    assert compare([1.0, 1.0, 1.0], [0.1, None, 0.1]) == "hurts"           # a non-finite run loses
    assert compare([1.0], [0.85]) == "helps" and compare([1.0], [0.95]) == "no clear difference"


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize("dim", [2, 8, 64])
def test_mixture_denoiser_is_tweedie_of_the_autograd_score(dim):
    """E[x_0 | x_t] = x_t + sigma^2 grad log p(x_t), the score taken by autograd of the exact log density."""
    family = random_mixture(dim, dtype=torch.float64)
    rng = torch.Generator().manual_seed(dim)
    for sigma in (0.05, 0.7, 3.0):
        x = family.sample_noisy(32, sigma, rng)
        tweedie = x + sigma ** 2 * autograd_score(family, x, sigma)
        torch.testing.assert_close(family(x, sigma), tweedie, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dim", [2, 16])
def test_eigen_mixture_agrees_with_the_cholesky_mixture(dim):
    family = random_mixture(dim, dtype=torch.float64)
    plain = GaussianMixture(family.weights, family.means, family.covs)
    x = family.sample_noisy(50, 0.5, torch.Generator().manual_seed(0))
    sigma = torch.rand(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3 + 0.01
    torch.testing.assert_close(family.log_prob(x, sigma), plain.log_prob(x, sigma))
    torch.testing.assert_close(family(x, sigma), plain(x, sigma))
    torch.testing.assert_close(family.score(x, sigma), plain.score(x, sigma))


def test_named_mixtures():
    assert make_target("gmm64d").dim == 64 and make_target("gmm5d").dim == 5   # any gmm<d>d
    torch.testing.assert_close(make_target("gmm8d").means, make_target("gmm8d").means)   # fixed by its seed
    assert not torch.allclose(random_mixture(8, seed=0).means, random_mixture(8, seed=1).means)
    family = make_target("gmm32d")
    distances = torch.cdist(family.means, family.means)[~torch.eye(4, dtype=torch.bool)]
    stds = family.eigenvalues.sqrt()
    assert 1.0 < distances.mean() < 1.8 and 0.3 <= stds.min() and stds.max() <= 0.6   # overlapping modes
    for bad in ("gmm0d", "gmm", "moons"):
        with pytest.raises(ConfigError, match="unknown target"):
            make_target(bad)


def test_energy_floor_is_the_distance_between_independent_target_sets():
    family = make_target("gmm8d")
    floor = energy_floor(family, 200, repeats=4)
    rng = torch.Generator().manual_seed(3)
    shifted = family.sample(200, rng) + 0.5
    assert 0 < floor < energy_distance(shifted, family.sample(200, rng)).item() / 5
    assert energy_floor(family, 800, repeats=4) < floor          # it shrinks with n (about as 1/n)


# --------------------------------------------------------------------------- the fitted teacher


def test_fitted_teacher_learns_and_is_not_exact():
    config = dataclasses.replace(TINY, target="gmm2d", teacher="fitted", teacher_steps=300, teacher_hidden=32,
                                 teacher_batch=128)
    target = make_target(config.target)
    rng = torch.Generator().manual_seed(0)
    x0, sigma = target.sample(2000, rng), torch.exp(-1.2 + 1.2 * torch.randn(2000, generator=rng))
    noise = torch.randn(x0.shape, generator=rng)
    held_out = lambda f: DenoisingLoss(sigma_data=0.67)(f, x0, sigma, noise)["loss"].mean().item()  # noqa: E731
    optimum = held_out(target)                                       # the exact denoiser minimises the loss
    untrained = fit_teacher(dataclasses.replace(config, teacher_steps=1))
    losses = []
    teacher = fit_teacher(config, losses)
    assert len(losses) == 300 and sum(losses[-50:]) < sum(losses[:50])
    assert held_out(teacher) - optimum < 0.5 * (held_out(untrained) - optimum)
    assert held_out(teacher) > optimum
    with torch.no_grad():
        x_t = x0 + sigma[:, None] * noise
        gap = (teacher(x_t, sigma) - target(x_t, sigma)).pow(2).sum(1).mean()
    assert gap > 1e-3                                                # imperfect, as a trained teacher is
    assert not any(p.requires_grad for p in teacher.parameters())


def test_fitted_teacher_is_cached_and_leaves_the_run_draws_alone():
    fitted = dataclasses.replace(TINY, target="gmm2d", teacher="fitted", seed=7)
    assert fitted_teacher(fitted) is fitted_teacher(dataclasses.replace(fitted, alpha=0.3))   # once per seed
    assert fitted_teacher(fitted) is not fitted_teacher(dataclasses.replace(fitted, seed=8))
    exact_run = ToyDistillation(dataclasses.replace(fitted, teacher="exact"))
    fitted_run = ToyDistillation(fitted)
    assert fitted_run.teacher is fitted_teacher(fitted) and exact_run.teacher is exact_run.target
    for a, b in zip(exact_run.G.parameters(), fitted_run.G.parameters()):
        torch.testing.assert_close(a, b)                             # same initial generator
    with pytest.raises(ConfigError, match="--teacher 'learned'"):
        ToyDistillation(dataclasses.replace(fitted, teacher="learned"))


# --------------------------------------------------------------------------- the study


def _curves(records):
    return {(r.study, r.value, r.alpha, r.seed): r.distances for r in records}


def test_tiny_study_records_progress_and_sharing():
    plan = tiny_plan()
    seen = []
    records = list(run_study(plan, progress=lambda done, total, r: seen.append((done, total))))
    assert len(records) == len(plan.runs()) == (2 + 2 + 2) * 2 * 2
    assert seen == [(i, len(records)) for i in range(1, len(records) + 1)]
    assert all(isinstance(r, RunRecord) and r.eval_steps == [4, 8, 12] and len(r.distances) == 3 for r in records)
    curves = _curves(records)
    # teacher=exact and fake_steps=1 are the same run as dimension=3 (shared, run once): same curve
    assert curves[("teacher", "exact", 0.5, 0)] == curves[("fake_steps", 1, 0.5, 0)] == curves[("dimension", 3, 0.5, 0)]
    assert curves[("teacher", "fitted", 0.5, 0)] != curves[("teacher", "exact", 0.5, 0)]
    assert curves[("dimension", 3, 0.5, 0)] != curves[("dimension", 3, 1.2, 0)]
    assert curves[("dimension", 3, 0.5, 0)] != curves[("dimension", 3, 0.5, 1)]
    for r in records:
        assert r.threshold == pytest.approx(plan.threshold_factor * r.floor)
        assert r.steps_to_threshold == steps_to_threshold(r.eval_steps, r.distances, r.threshold)


def test_seeds_make_the_study_reproducible():
    plan = tiny_plan(alphas=(1.2,), seeds=(3,))
    assert _curves(run_study(plan)) == _curves(run_study(plan))


def test_an_interrupted_study_resumes_from_its_records(tmp_path, monkeypatch):
    plan = tiny_plan(alphas=(1.0,), seeds=(0,))
    first = list(run_study(plan))
    path = tmp_path / "records.jsonl"
    save_records(first[:3], path)                                     # dimension=2, dimension=3 and its sharer
    ran = []
    real = alpha_study._distance_curve
    monkeypatch.setattr(alpha_study, "_distance_curve", lambda config, teacher=None: ran.append(config) or real(config))
    again = list(run_study(plan, previous=load_records(path)))
    assert sorted(c.target + c.teacher + str(c.fake_steps) for c in ran) == ["gmm3dexact2", "gmm3dfitted1"]
    assert _curves(again) == _curves(first)
    with_nan = dataclasses.replace(first[0], distances=[0.1, math.nan, math.inf], final=math.inf)
    save_records([with_nan], path)                                    # strict JSON: non-finite values as null
    assert load_records(path)[-1].distances[1:] == [math.inf, math.inf]


def test_worker_processes_give_the_in_process_results():
    plan = tiny_plan(alphas=(1.0,), seeds=(0,))
    assert _curves(run_study(plan, workers=2)) == _curves(run_study(plan))


def test_document_schema_and_outputs(tmp_path):
    plan = tiny_plan()
    doc = study_document(plan, list(run_study(plan)), {"exact": [0.1, 0.2], "fitted": [0.3, 0.4]})
    doc = json.loads(json.dumps(doc, allow_nan=False))               # strict JSON
    assert doc["alphas"] == [0.5, 1.2] and doc["seeds"] == [0, 1]
    assert isinstance(doc["metric"], str) and isinstance(doc["threshold"], (str, float))
    assert set(doc["studies"]) == {"dimension", "teacher", "fake_steps"}
    assert {"dimension": [2, 3], "teacher": ["exact", "fitted"], "fake_steps": [1, 2]} == {
        name: study["values"] for name, study in doc["studies"].items()}
    for study in doc["studies"].values():
        assert isinstance(study["axis"], str)
        assert len(study["floors"]) == len(study["thresholds"]) == len(study["values"])
        assert [(r["value"], r["alpha"]) for r in study["results"]] == [
            (v, a) for v in study["values"] for a in doc["alphas"]]
        for r in study["results"]:
            assert len(r["steps_to_threshold"]) == len(r["final"]) == 2
            assert all(s is None or isinstance(s, int) for s in r["steps_to_threshold"])
            assert all(isinstance(f, float) for f in r["final"])
    for value in (2, 3):
        assert f"dimension = {value}" in doc["summary"]
    json_path, png_path = write_outputs(doc, tmp_path)
    assert json.loads(json_path.read_text()) == doc
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_says_where_alpha_above_one_helps_and_hurts():
    records = []
    for value, good in ((2, 0.5), (64, 1.5)):                        # small alpha wins in 2-D, large in 64-D
        for alpha in (0.5, 1.0, 1.5):
            for seed in (0, 1, 2):
                final = 0.01 if alpha == good else 0.05 + 0.001 * seed
                steps = 100 if alpha == good else None
                records.append(RunRecord("dimension", value, alpha, seed, [100, 200], [0.5, final], 0.001, 0.01,
                                         steps, final, False, 0.0))
    plan = dataclasses.replace(tiny_plan(alphas=(0.5, 1.0, 1.5), seeds=(0, 1, 2)),
                               settings=tuple(s for s in PRESETS["full"].settings
                                              if s.study == "dimension" and s.value in (2, 64)))
    summary = study_document(plan, records)["summary"]
    assert "dimension = 2: alpha > 1 **hurts** on the final distance" in summary
    assert "dimension = 64: alpha > 1 **helps** on the final distance" in summary
    assert "helps in 1**, **hurts in 1**" in summary


def test_presets_cover_the_brief():
    full = PRESETS["full"]
    assert {0.0, 0.5, 1.0, 1.2, 1.5} <= set(full.alphas) and len(full.seeds) >= 3
    values = {name: [s.value for s in full.settings if s.study == name] for name in alpha_study.STUDIES}
    assert values == {"dimension": [2, 8, 16, 32, 64], "teacher": ["exact", "fitted"], "fake_steps": [1, 2, 5]}
    for s in full.settings + PRESETS["quick"].settings:
        dataclasses.replace(s.config, alpha=1.0).validate()
