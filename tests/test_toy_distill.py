"""Toy distillation: the loop trains, is deterministic, and reproduces Proposition 4's contrast."""
import pytest

from toy.distill import ToyConfig, ToyDistillation


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


@pytest.mark.parametrize("bad, message", [({"loss": "l3"}, "unknown loss"), ({"generator": "gan"}, "unknown generator"),
                                          ({"target": "moons"}, "unknown target"), ({"steps": 0}, "--steps 0: must be a number >= 1")])
def test_bad_config(bad, message):
    with pytest.raises(ValueError, match=message):
        ToyDistillation(ToyConfig(**bad))
