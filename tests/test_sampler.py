"""EDM sampler: Karras schedule (Eq. 5), NFE = 2N - 1, and exactness on a Gaussian denoiser."""
import dataclasses
import math

import pytest
import torch

from full.errors import ConfigError
from full.eval.sampler import SAMPLER_PRESETS, SamplerConfig, edm_sampler, karras_schedule, sampler_config


class GaussianDenoiser:
    """Exact denoiser of data N(m, s^2 I): D(x; sigma) = m + s^2 / (s^2 + sigma^2) (x - m); counts calls."""

    def __init__(self, m: float, s: float):
        self.m, self.s, self.calls = m, s, 0

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        assert sigma.ndim == 0
        return self.m + self.s ** 2 / (self.s ** 2 + sigma ** 2) * (x - self.m)


def test_schedule_closed_form_and_cifar_values():
    n = 18
    sigmas = karras_schedule(n)
    assert sigmas.dtype == torch.float64 and sigmas.shape == (n + 1,) and sigmas[-1] == 0
    for i in range(n):
        expected = (80 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        assert sigmas[i].item() == pytest.approx(expected, rel=1e-12)
    assert sigmas[:3].tolist() == pytest.approx([80, 57.586, 40.786], abs=1e-3)
    assert sigmas[16].item() == pytest.approx(0.00753, abs=1e-5)
    assert sigmas[17].item() == pytest.approx(0.002, rel=1e-12)
    assert torch.all(sigmas[:-1] > sigmas[1:])


@pytest.mark.parametrize("n", [1, 2, 18])
def test_nfe_is_2n_minus_1(n):
    net = GaussianDenoiser(0.0, 0.5)
    edm_sampler(net, torch.randn(2, 1, 2, 2), num_steps=n)
    assert net.calls == 2 * n - 1
    assert SAMPLER_PRESETS["32x32"].nfe == 35 and SAMPLER_PRESETS["64x64"].nfe == 79
    assert SAMPLER_PRESETS["imagenet64"].nfe == 511


def _check_gaussian(x, m, s, var_gain=1.0):
    x = x.flatten()
    n = x.numel()
    # The ODE maps sigma_max * z exactly to m + s / sqrt(s^2 + 80^2) (80 z - m): account for the prior mismatch.
    shrink = s / math.sqrt(s ** 2 + 80 ** 2)
    assert abs(x.mean().item() - m * (1 - shrink)) < 4 * s / math.sqrt(n)
    assert x.var().item() == pytest.approx(var_gain * s ** 2, rel=4 * math.sqrt(2 / n))


M, S = 0.3, 0.5
LATENTS = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
# Heun with EDM's 18 steps inflates the variance of N(m, 0.5^2) by this factor (discretisation error,
# from the scalar recursion of the linear ODE); the error vanishes as O(N^-2).
HEUN18_VAR_GAIN = 1.113551


def test_deterministic_sampler_recovers_gaussian():
    x = edm_sampler(GaussianDenoiser(M, S), LATENTS, num_steps=18)
    _check_gaussian(x, M, S, var_gain=HEUN18_VAR_GAIN)
    _check_gaussian(edm_sampler(GaussianDenoiser(M, S), LATENTS, num_steps=256), M, S)
    torch.manual_seed(123)  # the global RNG must not matter without churn
    assert torch.equal(x, edm_sampler(GaussianDenoiser(M, S), LATENTS, num_steps=18))


def test_stochastic_sampler_recovers_gaussian():
    churn = dict(dataclasses.asdict(SAMPLER_PRESETS["imagenet64"]), S_noise=1.0)  # S_noise > 1 deliberately adds variance

    def sample():
        return edm_sampler(GaussianDenoiser(M, S), LATENTS, rng=torch.Generator().manual_seed(2), **churn)

    x = sample()
    _check_gaussian(x, M, S)
    assert torch.equal(x, sample())
    assert not torch.equal(x, edm_sampler(GaussianDenoiser(M, S), LATENTS, num_steps=256))


def test_round_sigma_and_range_are_honoured():
    seen = []

    class Net(GaussianDenoiser):
        sigma_min, sigma_max = 0.01, 10.0

        def round_sigma(self, sigma):
            return sigma.round(decimals=3)

        def __call__(self, x, sigma, class_labels=None):
            seen.append(sigma.item())
            return super().__call__(x, sigma, class_labels)

    edm_sampler(Net(0.0, 0.5), torch.randn(1, 1, 2, 2), num_steps=5)
    positive = [v for v in seen if v > 0]
    assert max(positive) == pytest.approx(10.0) and min(positive) == pytest.approx(0.01)
    assert all(v == round(v, 3) for v in positive)


def test_presets_by_name_with_a_step_override():
    assert sampler_config() == SAMPLER_PRESETS["32x32"] and sampler_config().nfe == 35
    assert sampler_config("64x64").num_steps == 40
    churn = sampler_config("imagenet64", 32)
    assert (churn.num_steps, churn.S_churn, churn.S_min, churn.S_max, churn.S_noise) == (32, 40, 0.05, 50, 1.003)
    assert churn.stochastic and not sampler_config("64x64").stochastic
    with pytest.raises(ConfigError, match="--sampler 'cifar' is not a sampler preset; use one of 32x32, 64x64, imagenet64"):
        sampler_config("cifar")
    with pytest.raises(ConfigError, match="--steps 0"):
        sampler_config("64x64", 0)
    with pytest.raises(ConfigError, match="sigma_min < sigma_max"):
        SamplerConfig(sigma_min=5.0, sigma_max=1.0).validate()
    with pytest.raises(ConfigError, match="sampler setting rho nan is not allowed; it must be a finite number"):
        SamplerConfig(rho=float("nan")).validate()


def test_config_sample_equals_the_sampler_call():
    config = sampler_config("imagenet64", 6)
    x = config.sample(GaussianDenoiser(M, S), LATENTS[:8], rng=torch.Generator().manual_seed(3))
    y = edm_sampler(GaussianDenoiser(M, S), LATENTS[:8], rng=torch.Generator().manual_seed(3),
                    **dataclasses.asdict(config))
    assert torch.equal(x, y)


def test_one_generator_per_sample_makes_churn_independent_of_the_batch():
    """Row i's churn noise comes from rng[i] alone, so a sample is the same alone or in any batch."""
    config = sampler_config("imagenet64", 8)

    def generators(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    together = config.sample(GaussianDenoiser(M, S), LATENTS[:3], rng=generators([10, 11, 12]))
    alone = config.sample(GaussianDenoiser(M, S), LATENTS[2:3], rng=generators([12]))
    assert torch.equal(together[2:], alone)
    swapped = config.sample(GaussianDenoiser(M, S), LATENTS[2:3], rng=generators([10]))
    assert not torch.equal(swapped, alone)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        config.sample(GaussianDenoiser(M, S), LATENTS[:3], rng=generators([1, 2]))
