"""Monte Carlo counterparts of the symbolic identities, computed with sampling and autograd.

Each check samples from an exact family, evaluates the quantity with torch (scores by autograd,
losses through `full.method.losses`), and compares it with an independent closed form. A check passes
when the estimate lies within `tolerance` standard errors of the closed form.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from full.method.losses import Denoised, generator_objective
from toy.families import Gaussian, GaussianMixture

TOLERANCE = 4.0  # standard errors


@dataclass(frozen=True)
class MCCheck:
    name: str
    estimate: float
    stderr: float
    closed_form: float

    def band(self, tolerance: float = TOLERANCE) -> float:
        """How far the estimate may sit from the closed form: `tolerance` standard errors, plus float rounding
        (which is all there is when the stderr is exactly 0)."""
        return tolerance * self.stderr + 1e-9 * max(1.0, abs(self.closed_form))

    def passes(self, tolerance: float = TOLERANCE) -> bool:
        return abs(self.estimate - self.closed_form) <= self.band(tolerance)


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    return values.mean().item(), (values.std(unbiased=True) / values.numel() ** 0.5).item()


def autograd_score(family: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """grad_x log p(x_t) by differentiating the exact log density (independent of `family.score`)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(family.log_prob(x, sigma).sum(), x)
    return grad


def second_moment(family: GaussianMixture) -> float:
    """E|x_0|^2 = tr Sigma + |mu|^2 from the family's overall moments."""
    mean, cov = family.moments()
    return (cov.trace() + mean @ mean).item()


def tweedie_check(family: GaussianMixture, sigma: float, n: int = 100_000, seed: int = 0) -> MCCheck:
    """Tweedie (Identity 1): D(x_t) = (x_t + sigma^2 grad log p(x_t)) / a is E[x_0 | x_t].

    Only x_t ~ p(x_t) is sampled and the score comes from autograd; if D is the posterior mean,
    E[D(x_t)^T x_t] = E[x_0^T (a x_0 + sigma eps)] = a E|x_0|^2, a closed form in the moments.
    """
    x_t = family.sample_noisy(n, sigma, torch.Generator().manual_seed(seed))
    denoised = (x_t + sigma ** 2 * autograd_score(family, x_t, sigma)) / family.a
    estimate, stderr = _mean_and_stderr((denoised * x_t).sum(1))
    return MCCheck("tweedie", estimate, stderr, family.a * second_moment(family))


def polynomial_test_function(dim: int, seed: int = 0, dtype=torch.float64):
    """u(x) = c0 + C1 x + c2 * x^2 (elementwise) with random coefficients, and E[div u] as a function
    of E[x] (div u = tr C1 + 2 c2^T x)."""
    rng = torch.Generator().manual_seed(seed)
    c0, C1, c2 = (torch.randn(shape, generator=rng, dtype=dtype) for shape in ((dim,), (dim, dim), (dim,)))

    def u(x: torch.Tensor) -> torch.Tensor:
        return c0 + x @ C1.T + c2 * x ** 2

    def expected_divergence(mean_x: torch.Tensor) -> float:
        return (C1.trace() + 2 * c2 @ mean_x).item()

    return u, expected_divergence


def score_projection_checks(generator: GaussianMixture, sigma: float, n: int = 100_000,
                            seed: int = 0) -> tuple[MCCheck, MCCheck]:
    """Score projection (Identity 2) for a polynomial u, with p_theta a mixture.

    Left: E_{x_t ~ p_theta}[u^T grad log p_theta(x_t)] with the exact noisy score.
    Right: E_{x_g, x_t ~ q(x_t|x_g)}[u^T grad log q(x_t | x_g)], grad log q = -(x_t - a x_g)/sigma^2.
    Both are compared with Stein's closed form -E[div u(x_t)], E[x_t] = a E[x_g].
    """
    rng = torch.Generator().manual_seed(seed)
    u, expected_divergence = polynomial_test_function(generator.dim, seed, generator.means.dtype)
    x_g = generator.sample(n, rng)
    x_t = generator.a * x_g + sigma * torch.randn(x_g.shape, generator=rng)
    closed = -expected_divergence(generator.a * generator.moments()[0])
    left = _mean_and_stderr((u(x_t) * autograd_score(generator, x_t, sigma)).sum(1))
    right = _mean_and_stderr((u(x_t) * (-(x_t - generator.a * x_g) / sigma ** 2)).sum(1))
    return MCCheck("score_projection_marginal", *left, closed), MCCheck("score_projection_conditional", *right, closed)


def gaussian_fisher_divergence(p: Gaussian, q: Gaussian) -> float:
    """E_{x ~ p} ||grad log q(x) - grad log p(x)||^2 for Gaussians: the difference is M x + v with
    M = S_p^-1 - S_q^-1 and v = S_q^-1 m_q - S_p^-1 m_p, so it equals tr(M S_p M^T) + |M m_p + v|^2."""
    Pp, Pq = torch.linalg.inv(p.cov), torch.linalg.inv(q.cov)
    M, v = Pp - Pq, Pq @ q.mean - Pp @ p.mean
    return ((M @ p.cov @ M.T).trace() + (M @ p.mean + v).square().sum()).item()


def projected_score_matching_check(teacher: Gaussian, generator: Gaussian, sigma: float, n: int = 100_000,
                                   seed: int = 0) -> MCCheck:
    """Projected score matching (Theorem 5): E||S_phi - grad log p_theta||^2 equals
    E[(S_phi - grad log p_theta)^T (S_phi - grad log q(x_t | x_g))], estimated by sampling (x_g, x_t)
    and compared with the Gaussian Fisher divergence at noise level sigma in closed form."""
    rng = torch.Generator().manual_seed(seed)
    x_g = generator.sample(n, rng)
    x_t = generator.a * x_g + sigma * torch.randn(x_g.shape, generator=rng)
    score_gap = teacher.score(x_t, sigma) - generator.score(x_t, sigma)
    projected = teacher.score(x_t, sigma) + (x_t - generator.a * x_g) / sigma ** 2
    eye = torch.eye(teacher.dim)
    noisy = [Gaussian(f.a * f.mean, f.a ** 2 * f.cov + sigma ** 2 * eye) for f in (generator, teacher)]
    return MCCheck("projected_score_matching", *_mean_and_stderr((score_gap * projected).sum(1)),
                   gaussian_fisher_divergence(*noisy))


PROP4_OBJECTIVES = {  # name -> (generator objective, whether psi = psi*(theta) is differentiated)
    "naive": ("naive", False),
    "projected": ("projected", False),
    "sid": ("sid", False),
    "true": ("naive", True),
}


def prop4_gradients_mc(theta: float, sigma: float, alpha: float, n: int = 200_000, chunks: int = 50,
                       seed: int = 0) -> dict[str, tuple[float, float]]:
    """Monte Carlo theta-gradients of Proposition 4's objectives, by autograd through the shared losses.

    p_data = N(0, 1) gives the teacher f_phi; the fake score is the exact denoiser of N(psi, 1),
    f_psi(x_t) = x_t/(1+sigma^2) + psi sigma^2/(1+sigma^2). x_g = theta + z, x_t = x_g + sigma eps.
    psi = theta is held fixed (detached) except for 'true', where psi*(theta) = theta is differentiated.
    Returns name -> (mean gradient, standard error over `chunks` independent batches).
    """
    rng = torch.Generator().manual_seed(seed)
    f_phi = Gaussian(torch.zeros(1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    grads = {name: [] for name in PROP4_OBJECTIVES}
    for _ in range(chunks):
        z = torch.randn(n // chunks, 1, generator=rng, dtype=torch.float64)
        eps = torch.randn(n // chunks, 1, generator=rng, dtype=torch.float64)
        for name, (objective, psi_tracks_theta) in PROP4_OBJECTIVES.items():
            terms = generator_objective(objective, alpha=alpha).terms
            th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
            psi = th if psi_tracks_theta else th.detach()
            f_psi = Gaussian(psi.reshape(1), torch.ones(1, 1, dtype=torch.float64))
            x_g = th + z
            x_t = x_g + sigma * eps
            loss = terms(Denoised(x_g, f_phi(x_t, sigma), f_psi(x_t, sigma)))["loss"].mean()
            grads[name].append(torch.autograd.grad(loss, th)[0])
    return {name: _mean_and_stderr(torch.stack(values)) for name, values in grads.items()}
