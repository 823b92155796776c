"""Symbolic (sympy) proofs of the score identities behind SiD, in one dimension.

Zhou et al., "Score identity Distillation", ICML 2024 (arXiv 2404.04057). Each proof derives its
expressions from Gaussian densities by exact integration, then checks the claim with `claim_holds`:

1. `tweedie` (Identity 1, Tweedie's formula): for x_0 ~ N(mu, s^2) and x_t = a x_0 + sigma eps,
   E[x_0 | x_t] = (x_t + sigma^2 d/dx_t log p(x_t)) / a.
2. `score_projection` (Identity 2): for a polynomial test function u,
   E_{p_theta(x_t)}[u(x_t) d/dx_t log p_theta(x_t)] = E_{x_g, x_t}[u(x_t) d/dx_t log q(x_t | x_g)].
3. `projected_score_matching` (Theorem 5): the Fisher divergence E(S_phi - grad log p_theta)^2 equals
   E[(S_phi - grad log p_theta)(S_phi - grad log q(x_t | x_g))]; and, as a corollary, denoising and explicit
   score matching of a linear score model share their minimiser and differ by a constant.
4. `proposition4` (Proposition 4, "an example failure case"): with the fake score held at psi = theta, the
   naive loss (f_phi - f_psi)^2 gives the generator zero gradient, while the projected loss
   (f_phi - f_psi)(f_phi - x_g) and SiD's combination learn theta -> 0 exponentially fast.

Integration rule: the integrand is always poly(x) * exp(L(x)) with L quadratic in x, L = A x^2 + B x + C,
A < 0. Completing the square and shifting x reduces the integral to sqrt(pi) = int exp(-u^2) du:
I(b) = int exp(A x^2 + b x + C) dx = sqrt(pi / -A) exp(C - b^2 / (4A)), and int x^k exp(...) dx is the k-th
b-derivative of I at b = B (differentiation under the integral sign).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

Draw = tuple[sp.Symbol, sp.Expr, sp.Expr]  # (variable, mean, variance) of a Gaussian draw


@dataclass(frozen=True)
class Proof:
    """A checked claim: the expressions derived for it, and whether they simplify to it."""
    name: str
    claim: str
    derived: dict[str, sp.Expr]
    holds: bool


@dataclass(frozen=True)
class Prop4(Proof):
    """Proposition 4 with its theta-gradients, gradient-flow trajectories, limits and exponential rates."""
    gradients: dict[str, sp.Expr]
    trajectories: dict[str, sp.Expr]
    limits: dict[str, sp.Expr]
    rates: dict[str, sp.Expr]
    learns: dict[str, bool]


def claim_holds(lhs: sp.Expr, rhs: sp.Expr) -> bool:
    """True iff lhs - rhs simplifies to exactly zero (rational normal form first, full simplify as fallback)."""
    difference = sp.expand_log(sp.sympify(lhs - rhs), force=True)
    return sp.cancel(difference) == 0 or sp.simplify(difference) == 0


def _proof(name: str, claim: str, derived: dict[str, sp.Expr], equalities: list[tuple[sp.Expr, sp.Expr]]) -> Proof:
    holds = all(claim_holds(lhs, rhs) for lhs, rhs in equalities)
    if not holds:
        raise AssertionError(f"{name}: the derivation does not give the claim: {claim}")
    return Proof(name, claim, derived, holds)


@functools.lru_cache(maxsize=None)
def _sqrt_pi() -> sp.Expr:
    u = sp.Symbol("u", real=True)
    return sp.integrate(sp.exp(-u ** 2), (u, -sp.oo, sp.oo))


def normal_logpdf(x: sp.Expr, mean: sp.Expr, variance: sp.Expr) -> sp.Expr:
    return -(x - mean) ** 2 / (2 * variance) - sp.log(2 * sp.pi * variance) / 2


def gaussian_integral(poly: sp.Expr, log_weight: sp.Expr, x: sp.Symbol) -> tuple[sp.Expr, sp.Expr]:
    """int poly(x) exp(log_weight(x)) dx over the real line, as (poly', log_weight') in the remaining symbols.

    poly must be a polynomial in x and log_weight a quadratic with negative leading coefficient.
    """
    coeffs = sp.Poly(sp.expand(log_weight), x).all_coeffs()
    if len(coeffs) != 3:
        raise ValueError(f"log-weight is not quadratic in {x}: {log_weight}")
    A, B, C = sp.cancel(coeffs[0]), sp.cancel(coeffs[1]), coeffs[2]
    if not (-A).is_positive:
        raise ValueError(f"log-weight is not integrable in {x}: leading coefficient {A}")
    # d^k/db^k I(b) = I(b) P_k, where d(log I)/db = -b/(2A) =: m(b) and dm/db = -1/(2A) =: v, so P_k is a
    # polynomial in m, v with P_0 = 1 and P_{k+1} = m P_k + v dP_k/dm (P_k is then the k-th moment of N(m, v)).
    m, v = sp.Dummy("m"), sp.Dummy("v")
    moment, total = sp.Integer(1), sp.Integer(0)
    for coeff in reversed(sp.Poly(sp.expand(poly), x).all_coeffs()):
        total += coeff * moment
        moment = sp.expand(m * moment + v * sp.diff(moment, m))
    total = total.subs({m: sp.cancel(-B / (2 * A)), v: sp.cancel(-1 / (2 * A))}, simultaneous=True)
    return sp.cancel(total), sp.expand(sp.log(_sqrt_pi() / sp.sqrt(-A)) + C - B ** 2 / (4 * A))


def expectation(expr: sp.Expr, *draws: Draw) -> sp.Expr:
    """E[expr] for draws sampled in order (a later mean may depend on earlier variables); expr polynomial in them."""
    poly, log_weight = expr, sp.Integer(0)
    for x, mean, variance in reversed(draws):
        poly, log_weight = gaussian_integral(poly, log_weight + normal_logpdf(x, mean, variance), x)
    log_norm = sp.simplify(sp.expand_log(log_weight, force=True))
    if log_norm != 0:
        raise AssertionError(f"the draws' densities do not integrate to one: log-normaliser {log_norm}")
    return sp.cancel(poly)


def diffuse(x_t: sp.Symbol, x_0: sp.Symbol, mean: sp.Expr, variance: sp.Expr, a: sp.Expr,
            sigma: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """x_0 ~ N(mean, variance), x_t | x_0 ~ N(a x_0, sigma^2): (log p(x_t), E[x_0 | x_t]) by integrating x_0 out."""
    joint = normal_logpdf(x_0, mean, variance) + normal_logpdf(x_t, a * x_0, sigma ** 2)
    _, log_marginal = gaussian_integral(1, joint, x_0)
    first_moment, _ = gaussian_integral(x_0, joint, x_0)  # same exp factor as the marginal
    return log_marginal, sp.factor(first_moment)


def tweedie() -> Proof:
    """Identity 1: E[x_0 | x_t] = (x_t + sigma^2 score(x_t)) / a for Gaussian data."""
    a, sigma, s = sp.symbols("a sigma s", positive=True)
    mu, x_0, x_t = sp.symbols("mu x_0 x_t", real=True)
    log_marginal, posterior_mean = diffuse(x_t, x_0, mu, s ** 2, a, sigma)
    score = sp.factor(sp.diff(log_marginal, x_t))
    rhs = (x_t + sigma ** 2 * score) / a
    derived = {"marginal": sp.simplify(sp.exp(log_marginal)), "posterior_mean": posterior_mean, "score": score,
               "tweedie_rhs": sp.factor(rhs)}
    return _proof("tweedie", "E[x_0|x_t] = (x_t + sigma^2 d/dx_t log p(x_t))/a for x_0 ~ N(mu, s^2), "
                  "x_t = a x_0 + sigma eps", derived, [(posterior_mean, rhs)])


def score_projection(degree: int = 3) -> Proof:
    """Identity 2 for u(x_t) = sum_k c_k x_t^k, p_theta(x_g) = N(theta, s^2), q(x_t | x_g) = N(a x_g, sigma^2)."""
    a, sigma, s = sp.symbols("a sigma s", positive=True)
    theta, x_g, x_t = sp.symbols("theta x_g x_t", real=True)
    u = sum(c * x_t ** k for k, c in enumerate(sp.symbols(f"c0:{degree + 1}", real=True)))
    log_marginal, _ = diffuse(x_t, x_g, theta, s ** 2, a, sigma)
    score = sp.diff(log_marginal, x_t)
    conditional_score = sp.diff(normal_logpdf(x_t, a * x_g, sigma ** 2), x_t)
    poly, log_norm = gaussian_integral(u * score, log_marginal, x_t)
    marginal_side = sp.cancel(poly * sp.exp(sp.simplify(sp.expand_log(log_norm, force=True))))
    conditional_side = expectation(u * conditional_score, (x_g, theta, s ** 2), (x_t, a * x_g, sigma ** 2))
    derived = {"u": u, "score": sp.factor(score), "conditional_score": sp.factor(conditional_score),
               "marginal_side": marginal_side, "conditional_side": conditional_side}
    return _proof("score_projection", f"E_p(x_t)[u score] = E_(x_g,x_t)[u d/dx_t log q(x_t|x_g)] for polynomial u "
                  f"of degree {degree}", derived, [(marginal_side, conditional_side)])


def projected_score_matching() -> Proof:
    """Theorem 5 for a linear S_phi, plus denoising vs explicit score matching of a linear score model."""
    a, sigma, s = sp.symbols("a sigma s", positive=True)
    theta, k0, k1, w0, w1, x_g, x_t = sp.symbols("theta k0 k1 w0 w1 x_g x_t", real=True)
    log_marginal, _ = diffuse(x_t, x_g, theta, s ** 2, a, sigma)
    score = sp.diff(log_marginal, x_t)
    conditional_score = sp.diff(normal_logpdf(x_t, a * x_g, sigma ** 2), x_t)
    draws = ((x_g, theta, s ** 2), (x_t, a * x_g, sigma ** 2))
    gap = k1 * x_t + k0 - score
    fisher = expectation(gap ** 2, *draws)
    projected = expectation(gap * (k1 * x_t + k0 - conditional_score), *draws)

    model = w1 * x_t + w0
    explicit = expectation((model - score) ** 2, *draws)
    denoising = expectation((model - conditional_score) ** 2, *draws)
    argmin_explicit = sp.solve([sp.diff(explicit, w) for w in (w0, w1)], [w0, w1], dict=True)[0]
    argmin_denoising = sp.solve([sp.diff(denoising, w) for w in (w0, w1)], [w0, w1], dict=True)[0]
    gap_objectives = sp.factor(sp.expand(denoising - explicit))
    derived = {"fisher": fisher, "projected": projected, "explicit_sm": explicit, "denoising_sm": denoising,
               "argmin_w0": argmin_explicit[w0], "argmin_w1": argmin_explicit[w1], "dsm_minus_esm": gap_objectives}
    equalities = [(fisher, projected), (argmin_explicit[w0], argmin_denoising[w0]),
                  (argmin_explicit[w1], argmin_denoising[w1]),
                  (sp.diff(gap_objectives, w0), 0), (sp.diff(gap_objectives, w1), 0)]
    return _proof("projected_score_matching", "E(S_phi - grad log p)^2 = E[(S_phi - grad log p)(S_phi - grad log q)]; "
                  "DSM and ESM share the argmin and differ by a constant", derived, equalities)


def proposition4() -> Prop4:
    """Proposition 4: theta-gradients and gradient flows of the naive, projected, SiD and true objectives."""
    sigma = sp.Symbol("sigma", positive=True)
    theta, psi, alpha, z, eps, x_0, x_t, tau = sp.symbols("theta psi alpha z eps x_0 x_t tau", real=True)
    theta0 = sp.Symbol("theta0", real=True, nonzero=True)
    _, f_phi = diffuse(x_t, x_0, 0, 1, 1, sigma)      # teacher: denoiser of p_data = N(0, 1)
    _, f_psi = diffuse(x_t, x_0, psi, 1, 1, sigma)    # fake score: denoiser of N(psi, 1)
    x_g = theta + z
    sample = {x_t: x_g + sigma * eps}
    y_phi, y_psi = f_phi.subs(sample), f_psi.subs(sample)
    naive = (y_phi - y_psi) ** 2
    projected = (y_phi - y_psi) * (y_phi - x_g)
    draws = ((z, 0, 1), (eps, 0, 1))

    def fixed_psi(loss: sp.Expr) -> sp.Expr:  # E[d loss/d theta] through x_g and x_t, then psi = theta
        return sp.factor(expectation(sp.diff(loss, theta), *draws).subs(psi, theta))

    gradients = {"naive": fixed_psi(naive), "projected": fixed_psi(projected),
                 "sid": fixed_psi(projected - alpha * naive),
                 "true": sp.factor(sp.diff(expectation(naive.subs(psi, theta), *draws), theta))}

    path = sp.Function("theta")(tau)
    trajectories, limits, rates, learns = {}, {}, {}, {}
    for name, grad in gradients.items():
        flow = sp.dsolve(sp.Eq(path.diff(tau), -grad.subs(theta, path)), path, ics={path.subs(tau, 0): theta0}).rhs
        trajectories[name] = flow
        limits[name] = sp.limit(flow, tau, sp.oo)
        rates[name] = sp.simplify(-sp.diff(flow, tau) / flow)
        learns[name] = limits[name] == 0  # the data mean is 0

    shrink = sigma ** 4 / (1 + sigma ** 2) ** 2
    equalities = [(f_phi, x_t / (1 + sigma ** 2)), (f_psi, x_t / (1 + sigma ** 2) + psi * sigma ** 2 / (1 + sigma ** 2)),
                  (gradients["naive"], 0), (gradients["projected"], theta * shrink),
                  (gradients["sid"], gradients["projected"]), (gradients["true"], 2 * theta * shrink),
                  (rates["true"], 2 * rates["projected"])]
    holds = all(claim_holds(lhs, rhs) for lhs, rhs in equalities) and learns == {
        "naive": False, "projected": True, "sid": True, "true": True}
    claim = ("with psi = psi*(theta) = theta held fixed, the naive loss has zero theta-gradient and never learns; "
             "projected and SiD losses give theta sigma^4/(1+sigma^2)^2, half the true gradient, and learn exponentially")
    if not holds:
        raise AssertionError(f"proposition4: the derivation does not give the claim: {claim}")
    derived = {"f_phi": f_phi, "f_psi": f_psi}
    for key, table in (("grad", gradients), ("trajectory", trajectories), ("limit", limits), ("rate", rates)):
        derived.update({f"{key}_{name}": value for name, value in table.items()})
    return Prop4("proposition4", claim, derived, holds, gradients, trajectories, limits, rates, learns)


@functools.lru_cache(maxsize=1)
def _prop4_functions() -> dict:
    theta, sigma, alpha = sp.Symbol("theta", real=True), sp.Symbol("sigma", positive=True), sp.Symbol("alpha", real=True)
    return {name: sp.lambdify((theta, sigma, alpha), grad, "math")
            for name, grad in proposition4().gradients.items()}


def prop4_gradients(theta: float, sigma: float, alpha: float) -> dict[str, float]:
    """Closed-form Proposition 4 theta-gradients ('naive', 'projected', 'sid', 'true') at a point."""
    return {name: float(f(theta, sigma, alpha)) for name, f in _prop4_functions().items()}


def all_proofs() -> list[Proof]:
    return [tweedie(), score_projection(), projected_score_matching(), proposition4()]
