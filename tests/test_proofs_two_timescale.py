"""Proposition 4 with a lagging fake score (toy.proofs.two_timescale): the sympy drift matrix against autograd
through the shared losses, its solution against numerical integration, the fast-rate limit against Proposition 4's
flow, and the derived stability conditions against numerical eigenvalues."""
import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from full.method.losses import Denoised, generator_objective
from toy import proofs
from toy.families import Gaussian

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(6)  # exact for polynomials of degree <= 11 under N(0, 1)


@pytest.fixture(scope="module")
def system():
    return proofs.two_timescale()


def autograd_drift(theta: float, psi: float, alpha: float, sigma: float, s: float, eta: float) -> np.ndarray:
    """(theta', psi') from the shared SiD loss and the toy's exact denoisers, by autograd, with the expectation
    over (z, eps) taken by Gauss-Hermite quadrature (exact here: every term is a polynomial of degree <= 4)."""
    z, eps = (torch.tensor(v, dtype=torch.float64)[:, None] for v in np.meshgrid(NODES, NODES, indexing="ij"))
    z, eps = z.reshape(-1, 1), eps.reshape(-1, 1)
    weight = torch.tensor(np.outer(WEIGHTS, WEIGHTS).reshape(-1) / (2 * math.pi), dtype=torch.float64)
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    ps = torch.tensor(psi, dtype=torch.float64, requires_grad=True)
    f_phi = Gaussian(torch.zeros(1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    spread = torch.full((1, 1), s ** 2, dtype=torch.float64)
    x_g = th + s * z
    x_t = x_g + sigma * eps
    terms = generator_objective("sid", alpha=alpha).terms(
        Denoised(x_g, f_phi(x_t, sigma), Gaussian(ps.detach().reshape(1), spread)(x_t, sigma)))
    d_theta = -torch.autograd.grad((weight * terms["loss"]).sum(), th)[0]
    fake = (Gaussian(ps.reshape(1), spread)(x_t.detach(), sigma) - x_g.detach()).square().sum(1)
    d_psi = -eta * torch.autograd.grad((weight * fake).sum(), ps)[0]
    return np.array([d_theta.item(), d_psi.item()])


def test_the_system_holds_and_alpha_enters_only_off_unit_spread(system):
    alpha, s = sp.Symbol("alpha", real=True), sp.Symbol("s", positive=True)
    assert system.holds and system.alpha_free_at_unit_spread
    assert system.drift.has(alpha) and not system.drift.subs(s, 1).has(alpha)
    assert system.derived["psi_star"] == system.state[0]          # psi*(theta) = theta
    # Larger alpha always raises the trace (demands a faster fake score) unless s = 1.
    assert proofs.claim_holds(system.derived["d_trace_d_alpha"].subs(s, 1), 0)
    assert system.derived["d_trace_d_alpha"].subs(s, sp.Rational(1, 2)).is_positive


@given(theta=st.floats(-2, 2), psi=st.floats(-2, 2), alpha=st.floats(-1, 3), sigma=st.floats(0.1, 3),
       s=st.floats(0.3, 2), eta=st.floats(0.01, 20))
def test_drift_matches_autograd_through_the_shared_loss(theta, psi, alpha, sigma, s, eta):
    closed = proofs.two_timescale_drift(alpha, sigma, s, eta) @ np.array([theta, psi])
    np.testing.assert_allclose(closed, autograd_drift(theta, psi, alpha, sigma, s, eta), rtol=1e-9, atol=1e-11)


def test_alpha_changes_the_autograd_drift_exactly_when_the_spreads_differ():
    """Independent of sympy: at s = 1 the shared loss's theta-drift is the same for every alpha."""
    point = dict(theta=0.8, psi=-0.3, sigma=1.1, eta=0.7)
    unit = [autograd_drift(alpha=a, s=1.0, **point)[0] for a in (0.0, 1.2, 3.0)]
    assert max(unit) - min(unit) < 1e-12
    narrow = [autograd_drift(alpha=a, s=0.6, **point)[0] for a in (0.0, 1.2, 3.0)]
    assert min(abs(narrow[0] - narrow[1]), abs(narrow[1] - narrow[2])) > 1e-3


@pytest.mark.parametrize("alpha, s, eta", [(0.0, 0.7, 0.4), (2.5, 0.7, 0.4), (1.2, 1.0, 0.5), (1.2, 1.4, 3.0)])
def test_closed_form_solution_matches_numerical_integration(alpha, s, eta):
    sigma, start, taus = 1.0, np.array([1.5, -0.5]), np.linspace(0, 12, 25)
    A = proofs.two_timescale_drift(alpha, sigma, s, eta)
    closed = np.stack([expm(A * t) @ start for t in taus])
    numeric = solve_ivp(lambda t, y: autograd_drift(*y, alpha, sigma, s, eta), (0, taus[-1]), start, t_eval=taus,
                        rtol=1e-9, atol=1e-11).y.T
    np.testing.assert_allclose(numeric, closed, rtol=1e-6, atol=1e-7)


def test_eigenvalues_match_numpy(system):
    names = {q.name: q for q in system.trace.free_symbols | system.determinant.free_symbols}
    for alpha, sigma, s, eta in [(1.2, 1.0, 0.7, 0.3), (0.0, 0.5, 1.3, 5.0), (2.0, 2.0, 1.0, 1.0)]:
        values = {names[k]: v for k, v in dict(alpha=alpha, sigma=sigma, s=s, eta=eta).items() if k in names}
        derived = sorted((complex(sp.N(e.subs(values))) for e in system.eigenvalues), key=lambda c: (c.real, c.imag))
        numeric = sorted(np.linalg.eigvals(proofs.two_timescale_drift(alpha, sigma, s, eta)),
                         key=lambda c: (c.real, c.imag))
        np.testing.assert_allclose(derived, numeric, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_fast_rate_limit_recovers_proposition4s_flow(system, sigma):
    """eta -> oo pins psi at psi*(theta) = theta: theta(tau) follows Proposition 4's SiD flow theta0 exp(-rate tau)."""
    prop4 = proofs.proposition4()
    rate = float(prop4.rates["sid"].subs({q: sigma for q in prop4.rates["sid"].free_symbols}))
    limit = system.fast_limit.subs({q: {"sigma": sigma, "s": 1}[q.name] for q in system.fast_limit.free_symbols
                                    if q.name in ("sigma", "s")})
    assert not limit.free_symbols and float(limit) == pytest.approx(-rate, rel=1e-12)
    taus = np.linspace(0, 3 / rate, 7)
    flow = sp.lambdify(sorted(prop4.trajectories["sid"].free_symbols, key=lambda q: q.name), prop4.trajectories["sid"])
    prop4_theta = flow(sigma, taus, 1.0)  # sorted names: sigma, tau, theta0
    for alpha in (0.0, 1.2):
        A = proofs.two_timescale_drift(alpha, sigma, 1.0, 1e4)
        lagged = np.array([(expm(A * t) @ [1.0, 1.0])[0] for t in taus])
        np.testing.assert_allclose(lagged, prop4_theta, rtol=2e-3, atol=1e-6)
    slow = max(np.linalg.eigvals(proofs.two_timescale_drift(1.2, sigma, 1.0, 1e6)).real)
    assert slow == pytest.approx(-rate, rel=1e-4)


@given(alpha=st.floats(-1, 4), sigma=st.floats(0.2, 3), s=st.floats(0.3, 2), eta=st.floats(0.01, 10))
def test_derived_stability_conditions_match_the_spectrum(system, alpha, sigma, s, eta):
    A = proofs.two_timescale_drift(alpha, sigma, s, eta)
    trace, det = np.trace(A), np.linalg.det(A)
    stable = max(np.linalg.eigvals(A).real) < 0
    if min(abs(trace), abs(det)) > 1e-9:
        assert stable == (trace < 0 and det > 0)
    reduced = proofs.two_timescale_reduced_rate(alpha, sigma, s)
    if abs(reduced) > 1e-9:
        assert (det > 0) == (reduced < 0)      # the determinant's sign is the quasi-steady flow's
    critical = float(system.critical_rate.subs({q: dict(alpha=alpha, sigma=sigma, s=s)[q.name]
                                                for q in system.critical_rate.free_symbols}))
    assert float(proofs.two_timescale_critical_rate(alpha, sigma, s)) == pytest.approx(critical, rel=1e-9, abs=1e-12)
    if abs(eta - critical) > 1e-9:
        assert (trace < 0) == (eta > critical)


def test_critical_rate_over_an_array_of_alpha_is_the_rate_at_each():
    alphas = np.linspace(-1, 3, 9)
    rates = proofs.two_timescale_critical_rate(alphas, 0.8, 0.6)
    assert rates.shape == alphas.shape
    np.testing.assert_allclose(rates, [float(proofs.two_timescale_critical_rate(a, 0.8, 0.6)) for a in alphas],
                               rtol=1e-12)
    assert len(set(np.round(rates, 9))) > 1     # it depends on alpha


def test_mutation_a_wrong_alpha_sign_is_caught():
    """The autograd comparison is sharp: flipping alpha's sign in the closed form is detected."""
    point = dict(theta=0.8, psi=-0.3, sigma=1.1, s=0.6, eta=0.7)
    closed_wrong = proofs.two_timescale_drift(-1.2, point["sigma"], point["s"], point["eta"]) @ [0.8, -0.3]
    assert not np.allclose(closed_wrong, autograd_drift(alpha=1.2, **point), rtol=1e-6)
