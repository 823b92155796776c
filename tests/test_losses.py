"""The shared SiD losses against independent computations."""
import math

import pytest
import torch

from full.method import losses
from toy.families import Gaussian


def test_karras_sigma_endpoints_and_tmax_range():
    assert losses.karras_sigma(torch.tensor(0.0)).item() == pytest.approx(0.002)
    assert losses.karras_sigma(torch.tensor(1.0)).item() == pytest.approx(80.0)
    top = (80 ** (1 / 7) + 0.2 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # t = t_max/1000 = 0.8
    assert top == pytest.approx(24.41, abs=0.01)
    sigma = losses.sample_generator_sigma(20_000, 800, rng=torch.Generator().manual_seed(0))
    assert sigma.min() >= 0.002 - 1e-7 and sigma.max() <= top + 1e-4
    # t is uniform: the median of sigma is sigma(0.4).
    assert sigma.median().item() == pytest.approx(losses.karras_sigma(torch.tensor(0.4)).item(), rel=0.05)


def test_denoising_sigma_is_lognormal():
    sigma = losses.sample_denoising_sigma(50_000, rng=torch.Generator().manual_seed(0))
    assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.02)
    assert sigma.log().std().item() == pytest.approx(1.2, abs=0.02)


def test_edm_weight_closed_form():
    sigma = torch.tensor([0.1, 0.5, 2.0])
    expected = torch.tensor([(s ** 2 + 0.25) / (0.5 * s) ** 2 for s in (0.1, 0.5, 2.0)])
    torch.testing.assert_close(losses.edm_weight(sigma), expected)


def test_denoising_loss_of_exact_denoiser_is_weighted_posterior_variance():
    """For x_0 ~ N(0, s^2 I_d), E||E[x_0|x_t] - x_0||^2 = d s^2 sigma^2 / (s^2 + sigma^2)."""
    s, sigma, d, n = 0.7, 0.9, 3, 200_000
    data = Gaussian(torch.zeros(d, dtype=torch.float64), s ** 2 * torch.eye(d, dtype=torch.float64))
    x0 = data.sample(n, torch.Generator().manual_seed(0))
    loss = losses.DenoisingLoss()(data, x0, sigma=torch.full((n,), sigma, dtype=torch.float64),
                                  rng=torch.Generator().manual_seed(1))["loss"]
    expected = losses.edm_weight(torch.tensor(sigma)).item() * d * s ** 2 * sigma ** 2 / (s ** 2 + sigma ** 2)
    assert abs(loss.mean().item() - expected) < 4 * loss.std().item() / math.sqrt(n)


def _pair(shape=(4, 3, 2, 2), seed=0):
    """Two smooth nonlinear 'denoisers' and a generator sample, for checks of the generator loss."""
    g = torch.Generator().manual_seed(seed)
    W1, W2 = torch.randn(shape[1], shape[1], generator=g, dtype=torch.float64), torch.randn(
        shape[1], shape[1], generator=g, dtype=torch.float64)
    f_phi = lambda x, s: torch.tanh(torch.einsum("ij,bj...->bi...", W1, x)) / (1 + s)
    f_psi = lambda x, s: torch.sin(torch.einsum("ij,bj...->bi...", W2, x)) / (1 + s ** 2)
    x_g = torch.randn(shape, generator=g, dtype=torch.float64)
    sigma = torch.rand(shape[0], generator=g, dtype=torch.float64) + 0.1
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    return f_phi, f_psi, x_g, sigma, noise


def test_sid_generator_terms_equal_direct_formulas():
    f_phi, f_psi, x_g, sigma, noise = _pair()
    alpha = 1.2
    got = losses.SiD(alpha)(f_phi, f_psi, x_g, sigma, noise)
    s = sigma.reshape(-1, 1, 1, 1)
    x_t = x_g + s * noise
    y_r, y_f = f_phi(x_t, s), f_psi(x_t, s)
    w = (x_g - y_r).abs().mean((1, 2, 3))
    direct = ((y_r - y_f) * ((y_r - x_g) - alpha * (y_r - y_f))).sum((1, 2, 3)) / w
    assert set(got) == {"loss", "L1", "L2"}
    torch.testing.assert_close(got["loss"], direct)
    torch.testing.assert_close(got["L1"], ((y_r - y_f) ** 2).sum((1, 2, 3)) / w)
    torch.testing.assert_close(got["L2"], ((y_r - y_f) * (y_r - x_g)).sum((1, 2, 3)) / w)
    torch.testing.assert_close(got["loss"], got["L2"] - alpha * got["L1"])
    # Resolved by name from a config that carries more parameters than SiD has.
    assert losses.generator_objective("sid", alpha=0.7, gan_weight=3.0) == losses.SiD(0.7)


def test_sid_gradient_flows_through_both_denoiser_inputs():
    """Autograd d loss / d x_g equals a central finite difference of the full loss (weight held fixed),
    and differs from the gradient with the denoiser outputs detached."""
    f_phi, f_psi, x_g, sigma, noise = _pair(seed=1)
    w = losses.sid_normaliser(x_g, f_phi(x_g + sigma.reshape(-1, 1, 1, 1) * noise, sigma.reshape(-1, 1, 1, 1)))

    def loss_at(x, detach_outputs=False):
        s = sigma.reshape(-1, 1, 1, 1)
        y_r, y_f = f_phi(x + s * noise, s), f_psi(x + s * noise, s)
        if detach_outputs:
            y_r, y_f = y_r.detach(), y_f.detach()
        return (losses.SiD(1.2).terms(losses.Denoised(x, y_r, y_f))["loss"] / w).sum()

    x = x_g.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(losses.SiD(1.2)(f_phi, f_psi, x, sigma, noise)["loss"].sum(), x)
    eps, fd = 1e-6, torch.zeros_like(x_g)
    for i in range(x_g.numel()):
        e = torch.zeros_like(x_g).flatten()
        e[i] = eps
        e = e.reshape(x_g.shape)
        fd.view(-1)[i] = (loss_at(x_g + e) - loss_at(x_g - e)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-7)
    x2 = x_g.clone().requires_grad_(True)
    (grad_detached,) = torch.autograd.grad(loss_at(x2, detach_outputs=True), x2)
    assert (grad - grad_detached).abs().max() > 1e-3


def test_normaliser_is_detached_and_clipped():
    x_g = torch.randn(3, 5, requires_grad=True)
    w = losses.sid_normaliser(x_g, x_g.detach() + 1.0)
    assert not w.requires_grad
    torch.testing.assert_close(w, torch.ones(3))
    assert losses.sid_normaliser(x_g, x_g.detach()).min().item() == pytest.approx(losses.WEIGHT_FLOOR)


@pytest.mark.parametrize("name, normalised", [("diff_instruct", False), ("dmd", True)])
def test_peer_gradients_are_the_score_difference(name, normalised):
    """Diff-Instruct and DMD move x_g along f_phi - f_psi (DMD divided by mean|x_g - f_phi|),
    with no gradient through the denoisers."""
    f_phi, f_psi, x_g, sigma, noise = _pair(seed=2)
    x = x_g.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(losses.generator_objective(name)(f_phi, f_psi, x, sigma, noise)["loss"].sum(), x)
    s = sigma.reshape(-1, 1, 1, 1)
    y_r, y_f = f_phi(x_g + s * noise, s), f_psi(x_g + s * noise, s)
    expected = y_f - y_r
    if normalised:
        expected = expected / (x_g - y_r).abs().mean((1, 2, 3)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(grad, expected)


def test_every_objective_runs_on_images_and_points():
    for shape in [(5, 2), (2, 3, 4, 4)]:
        x_g = torch.randn(shape)
        for name, objective in losses.GENERATOR_OBJECTIVES.items():
            if objective.needs_logits:
                continue
            terms = losses.generator_objective(name)(lambda x, s: 0.5 * x, lambda x, s: 0.4 * x, x_g)
            assert all(t.shape == (shape[0],) and torch.isfinite(t).all() for t in terms.values())
