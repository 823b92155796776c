"""Toy distillation: the loop trains, is deterministic, and reproduces Proposition 4's contrast."""
import pytest
import torch

from toy.distill import ToyConfig, ToyDistillation
from toy.metrics import energy_distance
from toy.models import MLPDenoiser


def run(**kwargs):
    return list(ToyDistillation(ToyConfig(**kwargs)))


def test_records_and_evaluation_schedule():
    records = run(generator="affine", target="gaussian2d", steps=20, eval_every=5, batch=64, eval_samples=200)
    assert [r.step for r in records] == list(range(1, 21))
    assert [r.step for r in records if r.energy is not None] == [5, 10, 15, 20]
    assert all(r.kl is not None for r in records if r.energy is not None)


def test_same_seed_same_run():
    kwargs = dict(generator="mlp", target="mixture1d", steps=5, fake_warmup=3, fake_steps=2, batch=32,
                  eval_every=5, eval_samples=100, hidden=16)
    a, b = run(**kwargs), run(**kwargs)
    assert [r.to_json() | {"seconds": 0} for r in a] == [r.to_json() | {"seconds": 0} for r in b]


def test_affine_sid_learns_and_naive_does_not():
    """With the exact fake score, SiD drives KL(p_theta || p_data) down; the naive loss cannot (Prop. 4)."""
    common = dict(generator="affine", target="gaussian2d", steps=300, lr=1e-2, batch=256, eval_every=300,
                  eval_samples=500)
    start = ToyDistillation(ToyConfig(**common)).evaluate()["kl"]
    sid = run(loss="sid", alpha=1.0, **common)[-1].kl
    naive = run(loss="naive", **common)[-1].kl
    assert sid < 0.25 * start
    assert naive > 0.9 * start


def test_mlp_sid_reduces_energy_distance_on_8_gaussians():
    common = dict(generator="mlp", target="8gaussians", batch=256, fake_warmup=50, fake_steps=2, eval_samples=500,
                  hidden=64, eval_every=1)
    first = run(steps=1, **common)[-1].energy
    last = run(steps=150, **common)[-1].energy
    assert last < 0.3 * first


def test_fitted_teacher_and_d_dimensional_targets():
    common = dict(generator="mlp", steps=4, batch=32, hidden=16, fake_warmup=2, fake_steps=1, eval_every=2,
                  eval_samples=64, teacher_steps=5, teacher_hidden=16, teacher_batch=32)
    run = ToyDistillation(ToyConfig(target="gmm16d", teacher="fitted", **common))
    assert isinstance(run.teacher, MLPDenoiser) and run.target.dim == 16
    records = list(run)
    assert [r.step for r in records if r.energy is not None] == [2, 4]
    exact = list(ToyDistillation(ToyConfig(target="gmm16d", **common)))
    assert records[-1].energy != exact[-1].energy          # the teacher is used by the generator step


def test_evaluation_distance_is_the_energy_distance_to_the_fixed_target_set():
    run = ToyDistillation(ToyConfig(target="overlap2d", steps=1, eval_samples=300, hidden=16))
    out = run.evaluate()
    expected = energy_distance(out["samples"], run.eval_target).item()
    assert out["energy"] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert torch.equal(run.sample(), out["samples"])


@pytest.mark.parametrize("bad, message", [({"loss": "l3"}, "unknown loss"), ({"generator": "gan"}, "unknown generator"),
                                          ({"target": "moons"}, "unknown target"), ({"steps": 0}, "--steps 0 is not allowed; it must be a number >= 1"),
                                          ({"teacher": "learned"}, "--teacher 'learned' is not allowed; it must be one of exact, fitted"),
                                          ({"target": "gmm0d"}, "unknown target")])
def test_bad_config(bad, message):
    with pytest.raises(ValueError, match=message):
        ToyDistillation(ToyConfig(**bad))


def test_off_mode_fraction_of_exact_samples_is_the_chi_square_tail():
    """For separated modes, an exact sample is off every mode (beyond 3 standard deviations) with probability
    P(chi^2_2 > 9) = exp(-4.5)."""
    import math

    from toy.metrics import off_mode_fraction
    from toy.targets import make_target
    target = make_target("8gaussians")
    n = 200_000
    share = off_mode_fraction(target, target.sample(n, torch.Generator().manual_seed(0))).item()
    p = math.exp(-4.5)
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert off_mode_fraction(target, torch.zeros(10, 2)).item() == 1.0  # the centre is on a bridge


def test_mlp_fake_score_is_also_the_discriminator():
    from toy.models import MLPDenoiser
    torch.manual_seed(0)
    f = MLPDenoiser(2, hidden=16)
    x, sigma = torch.randn(5, 2), torch.rand(5) + 0.1
    D, logits = f(x, sigma, return_logits=True)
    torch.testing.assert_close(D, f(x, sigma))
    torch.testing.assert_close(logits, f.logits(x, sigma))
    hidden = f.net[:-1](torch.cat([x / (sigma[:, None] ** 2 + 0.25).sqrt(),
                                   torch.cat([((sigma[:, None].log() / 4) * f.freqs).cos(),
                                              ((sigma[:, None].log() / 4) * f.freqs).sin()], 1)], 1))
    torch.testing.assert_close(logits, hidden.mean(1, keepdim=True))


def test_toy_sida_trains_with_real_target_samples():
    records = run(generator="mlp", target="8gaussians", loss="sida", alpha=1.0, steps=4, fake_warmup=2,
                  fake_steps=1, batch=64, eval_every=2, eval_samples=200, hidden=32)
    assert [r.step for r in records] == [1, 2, 3, 4]
    assert all(r.off_mode is not None and 0 <= r.off_mode <= 1 for r in records if r.energy is not None)
    with pytest.raises(ValueError, match="needs a fitted fake score"):
        ToyDistillation(ToyConfig(loss="sida", generator="affine", target="gaussian2d"))
