"""Symbolic proofs (toy.proofs): every claim holds, Proposition 4's closed forms have the paper's structure,
and the checking machinery rejects deliberately wrong claims."""
import math

import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from toy import proofs

a, sigma, s = sp.symbols("a sigma s", positive=True)
mu, theta, psi, alpha, x_0, x_g, x_t = sp.symbols("mu theta psi alpha x_0 x_g x_t", real=True)


@pytest.fixture(scope="module")
def all_proofs():
    return {p.name: p for p in proofs.all_proofs()}


@pytest.fixture(scope="module")
def prop4(all_proofs):
    return all_proofs["proposition4"]


def test_every_proof_holds(all_proofs):
    assert set(all_proofs) == {"tweedie", "score_projection", "projected_score_matching", "proposition4", "two_timescale"}
    for p in all_proofs.values():
        assert isinstance(p, proofs.Proof) and p.holds, p.name
        assert p.claim and "\n" not in p.claim
        assert all(isinstance(v, sp.Basic) for v in p.derived.values()), p.name


def test_tweedie_derived_forms(all_proofs):
    d = all_proofs["tweedie"].derived
    assert proofs.claim_holds(d["posterior_mean"], (a * s ** 2 * x_t + mu * sigma ** 2) / (a ** 2 * s ** 2 + sigma ** 2))
    assert proofs.claim_holds(d["score"], -(x_t - a * mu) / (a ** 2 * s ** 2 + sigma ** 2))


def test_score_projection_other_degree():
    p = proofs.score_projection(degree=5)
    assert p.holds and p.derived["u"].has(sp.Symbol("c5", real=True))


def test_projected_score_matching_objectives_differ_by_constant(all_proofs):
    d = all_proofs["projected_score_matching"].derived
    w0, w1 = sp.symbols("w0 w1", real=True)
    assert not d["dsm_minus_esm"].has(w0) and not d["dsm_minus_esm"].has(w1)
    assert proofs.claim_holds(d["explicit_sm"].subs({w0: d["argmin_w0"], w1: d["argmin_w1"]}), 0)


def test_gaussian_moments():
    m, v = sp.Symbol("m", real=True), sp.Symbol("v", positive=True)
    assert proofs.claim_holds(proofs.expectation(x_0 ** 2, (x_0, m, v)), m ** 2 + v)
    assert proofs.claim_holds(proofs.expectation(x_0 ** 4, (x_0, m, v)), m ** 4 + 6 * m ** 2 * v + 3 * v ** 2)
    assert proofs.claim_holds(proofs.expectation(x_0 * x_g, (x_0, m, v), (x_g, 2 * x_0, 1)), 2 * (m ** 2 + v))


def test_non_integrable_weight_rejected():
    with pytest.raises(ValueError):
        proofs.gaussian_integral(1, x_0 ** 2, x_0)


# Mutation tests: the checker must reject wrong claims.

def test_mutation_tweedie_wrong_sign(all_proofs):
    d = all_proofs["tweedie"].derived
    assert not proofs.claim_holds(d["posterior_mean"], (x_t - sigma ** 2 * d["score"]) / a)
    assert not proofs.claim_holds(d["posterior_mean"], x_t + sigma ** 2 * d["score"])  # missing 1/a


def test_mutation_score_projection_missing_a(all_proofs):
    d = all_proofs["score_projection"].derived
    wrong = proofs.expectation(d["u"] * (-(x_t - x_g) / sigma ** 2), (x_g, theta, s ** 2), (x_t, a * x_g, sigma ** 2))
    assert not proofs.claim_holds(d["marginal_side"], wrong)


def test_mutation_proof_raises_on_wrong_claim(all_proofs):
    d = all_proofs["tweedie"].derived
    with pytest.raises(AssertionError):
        proofs._proof("tweedie", "wrong sign", d, [(d["posterior_mean"], (x_t - sigma ** 2 * d["score"]) / a)])


def test_mutation_prop4_naive_with_psi_tracked_is_not_zero(prop4):
    assert not proofs.claim_holds(prop4.gradients["true"], 0)
    assert not proofs.claim_holds(prop4.gradients["projected"], prop4.gradients["true"])


# Proposition 4 structure.

def test_prop4_gradient_structure(prop4):
    g = prop4.gradients
    assert set(g) == {"naive", "projected", "sid", "true"}
    assert g["naive"] == 0
    assert proofs.claim_holds(g["true"], 2 * g["projected"])
    assert proofs.claim_holds(g["sid"], g["projected"]) and not g["sid"].has(alpha)
    assert proofs.claim_holds(g["projected"], theta * sigma ** 4 / (1 + sigma ** 2) ** 2)


def test_prop4_dynamics(prop4):
    assert prop4.learns == {"naive": False, "projected": True, "sid": True, "true": True}
    assert prop4.rates["naive"] == 0
    for name in ("projected", "sid", "true"):
        assert prop4.rates[name].is_positive, name
        assert prop4.limits[name] == 0
    assert proofs.claim_holds(prop4.rates["true"], 2 * prop4.rates["projected"])
    theta0 = sp.Symbol("theta0", real=True, nonzero=True)
    assert prop4.limits["naive"] == theta0
    tau = sp.Symbol("tau", real=True)
    for name, flow in prop4.trajectories.items():
        assert proofs.claim_holds(flow.subs(tau, 0), theta0), name


def _exact_expectations(th: float, ps: float, sg: float) -> tuple[float, float]:
    """E[L1], E[L2] by hand: f_phi - f_psi = -psi sg^2/(1+sg^2) is constant and
    f_phi - x_g = (-sg^2 x_g + sg eps)/(1+sg^2) with E[x_g] = theta, E[eps] = 0."""
    gap = -ps * sg ** 2 / (1 + sg ** 2)
    return gap ** 2, gap * (-sg ** 2 * th) / (1 + sg ** 2)


@given(th=st.floats(-3, 3), sg=st.floats(0.05, 5), al=st.floats(0, 2))
def test_prop4_gradients_match_finite_differences(th, sg, al):
    h = 1e-5
    fd = lambda f: (f(th + h) - f(th - h)) / (2 * h)
    naive = fd(lambda t: _exact_expectations(t, th, sg)[0])
    projected = fd(lambda t: _exact_expectations(t, th, sg)[1])
    sid = projected - al * naive
    true = fd(lambda t: _exact_expectations(t, t, sg)[0])
    closed = proofs.prop4_gradients(th, sg, al)
    for name, value in (("naive", naive), ("projected", projected), ("sid", sid), ("true", true)):
        assert math.isclose(closed[name], value, rel_tol=1e-6, abs_tol=1e-8), name
