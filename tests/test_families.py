"""The closed-form families against independent computations."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from scipy import integrate, stats
from strategies import gaussians, mixtures, sigmas

from toy.families import Gaussian, GaussianMixture, gaussian_kl
from toy.montecarlo import autograd_score


@given(mixtures(), sigmas)
def test_score_is_the_gradient_of_the_log_density(family, sigma):
    x = family.sample_noisy(64, sigma, torch.Generator().manual_seed(0))
    torch.testing.assert_close(family.score(x, sigma), autograd_score(family, x, sigma), rtol=1e-8, atol=1e-10)


@given(mixtures(), sigmas)
def test_denoiser_obeys_tweedie(family, sigma):
    x = family.sample_noisy(64, sigma, torch.Generator().manual_seed(1))
    tweedie = (x + sigma ** 2 * family.score(x, sigma)) / family.a
    torch.testing.assert_close(family(x, sigma), tweedie, rtol=1e-8, atol=1e-10)


@given(mixtures(max_dim=1), sigmas)
def test_noisy_density_integrates_to_one_in_1d(family, sigma):
    density = lambda x: family.log_prob(torch.tensor([[x]], dtype=torch.float64), sigma).exp().item()
    total, _ = integrate.quad(density, -np.inf, np.inf)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_noisy_gaussian_density_matches_scipy():
    mean, cov, sigma = torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]]), 0.7
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    expected = stats.multivariate_normal(mean.numpy(), (cov + sigma ** 2 * torch.eye(2)).numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(Gaussian(mean, cov).log_prob(x, sigma).numpy(), expected, rtol=1e-5)


def test_denoiser_matches_posterior_mean_by_quadrature():
    family = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0], [2.0]]),
                             torch.tensor([[[0.2]], [[0.6]]]), a=0.9)
    sigma, x_t = 0.8, 0.4
    data = GaussianMixture(family.weights, family.means, family.covs)  # a = 1: the density of x_0 itself
    prior = lambda x0: data.log_prob(torch.tensor([[x0]]), 0.0).exp().item()
    lik = lambda x0: math.exp(-(x_t - 0.9 * x0) ** 2 / (2 * sigma ** 2))
    num, _ = integrate.quad(lambda x0: x0 * prior(x0) * lik(x0), -20, 20)
    den, _ = integrate.quad(lambda x0: prior(x0) * lik(x0), -20, 20)
    assert family(torch.tensor([[x_t]]), sigma).item() == pytest.approx(num / den, rel=1e-5)


@given(mixtures())
def test_sampler_matches_moments(family):
    x = family.sample(40_000, torch.Generator().manual_seed(2))
    mean, cov = family.moments()
    stderr = (cov.diagonal() / x.shape[0]).sqrt()
    assert ((x.mean(0) - mean).abs() <= 5 * stderr).all()
    torch.testing.assert_close(torch.cov(x.T).reshape(cov.shape), cov, atol=0.08, rtol=0.08)


@given(gaussians(2), gaussians(2))
def test_gaussian_kl_matches_monte_carlo(p, q):
    x = p.sample(40_000, torch.Generator().manual_seed(3))
    ratio = p.log_prob(x) - q.log_prob(x)
    stderr = ratio.std() / ratio.numel() ** 0.5
    assert abs(gaussian_kl(p, q) - ratio.mean()) <= 5 * stderr + 1e-9
    assert gaussian_kl(p, p).abs() < 1e-9


def test_inconsistent_shapes_are_refused():
    with pytest.raises(ValueError, match="inconsistent mixture shapes"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 3), torch.eye(2).expand(2, 2, 2))
