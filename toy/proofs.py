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
5. `two_timescale` (Proposition 4 with a lagging fake score): psi is fitted at a finite rate eta while theta
   follows SiD's gradient, d(theta, psi)/d tau = A (theta, psi). The drift matrix A, its eigenvalues, the
   stability conditions in alpha and eta and the eta -> oo limit are derived; with the generator's spread s
   equal to the data's (s = 1, Proposition 4 exactly) alpha drops out of A, and for s != 1 it does not.

Integration rule: the integrand is always poly(x) * exp(L(x)) with L quadratic in x, L = A x^2 + B x + C,
A < 0. Completing the square and shifting x reduces the integral to sqrt(pi) = int exp(-u^2) du:
I(b) = int exp(A x^2 + b x + C) dx = sqrt(pi / -A) exp(C - b^2 / (4A)), and int x^k exp(...) dx is the k-th
b-derivative of I at b = B (differentiation under the integral sign).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy as sp

Draw = tuple[sp.Symbol, sp.Expr, sp.Expr]  # (variable, mean, variance) of a Gaussian draw


@dataclass(frozen=True)
class Proof:
    """A checked claim: the expressions derived for it, and whether they simplify to it."""
    name: str
    claim: str
    derived: dict[str, sp.Expr]
    holds: bool
    glossary: dict[str, str] = field(default_factory=dict, kw_only=True)  # symbol name -> what it stands for


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


def _proof(name: str, claim: str, derived: dict[str, sp.Expr], equalities: list[tuple[sp.Expr, sp.Expr]],
           glossary: dict[str, str] | None = None) -> Proof:
    holds = all(claim_holds(lhs, rhs) for lhs, rhs in equalities)
    if not holds:
        raise AssertionError(f"{name}: the derivation does not give the claim: {claim}")
    return Proof(name, claim, derived, holds, glossary=dict(glossary or {}))


# What the symbols of the proofs stand for (the explorer prints these next to the formulas).
DIFFUSION_GLOSSARY = {
    "x_0": "clean sample",
    "x_t": "noisy sample, x_t = a x_0 + sigma eps with eps ~ N(0, 1)",
    "a": "signal scale of the forward process (a = 1 in EDM and SiD)",
    "sigma": "noise level sigma_t",
}


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
               "tweedie_rhs": sp.factor(rhs), "tweedie_rhs_as_derived": rhs}
    return _proof("tweedie", "E[x_0|x_t] = (x_t + sigma^2 d/dx_t log p(x_t))/a for x_0 ~ N(mu, s^2), "
                  "x_t = a x_0 + sigma eps", derived, [(posterior_mean, rhs)],
                  {**DIFFUSION_GLOSSARY, "mu": "mean of the data x_0", "s": "standard deviation of the data x_0"})


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
               "marginal_side": marginal_side, "conditional_side": conditional_side,
               "marginal_integrand": u * sp.factor(score), "conditional_integrand": u * sp.factor(conditional_score)}
    glossary = {**DIFFUSION_GLOSSARY, "x_g": "generator sample, x_g ~ p_theta = N(theta, s^2)",
                "x_t": "noisy generator sample, x_t = a x_g + sigma eps", "theta": "mean of the generator",
                "s": "standard deviation of the generator", "c_k": f"coefficients of the test function "
                f"u(x_t) = c_0 + c_1 x_t + ... + c_{degree} x_t^{degree}"}
    glossary.pop("x_0")
    return _proof("score_projection", f"E_p(x_t)[u score] = E_(x_g,x_t)[u d/dx_t log q(x_t|x_g)] for polynomial u "
                  f"of degree {degree}", derived, [(marginal_side, conditional_side)], glossary)


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
               "argmin_w0": argmin_explicit[w0], "argmin_w1": argmin_explicit[w1], "dsm_minus_esm": gap_objectives,
               "score": sp.factor(score), "conditional_score": sp.factor(conditional_score),
               "fisher_integrand": (k1 * x_t + k0 - sp.factor(score)) ** 2,
               "projected_integrand": (k1 * x_t + k0 - sp.factor(score)) * (k1 * x_t + k0 - sp.factor(conditional_score))}
    glossary = {**DIFFUSION_GLOSSARY, "x_g": "generator sample, x_g ~ p_theta = N(theta, s^2)",
                "x_t": "noisy generator sample, x_t = a x_g + sigma eps", "theta": "mean of the generator",
                "s": "standard deviation of the generator",
                "k_0, k_1": "a linear score model S_phi(x_t) = k_1 x_t + k_0 (the teacher's score, any line)",
                "w_0, w_1": "a linear score model w_1 x_t + w_0 fitted by explicit or denoising score matching"}
    glossary.pop("x_0")
    equalities = [(fisher, projected), (argmin_explicit[w0], argmin_denoising[w0]),
                  (argmin_explicit[w1], argmin_denoising[w1]),
                  (sp.diff(gap_objectives, w0), 0), (sp.diff(gap_objectives, w1), 0)]
    return _proof("projected_score_matching", "E(S_phi - grad log p)^2 = E[(S_phi - grad log p)(S_phi - grad log q)]; "
                  "DSM and ESM share the argmin and differ by a constant", derived, equalities, glossary)


@functools.lru_cache(maxsize=1)
def proposition4() -> Prop4:
    """Proposition 4 (derived once per process; the result is read-only): theta-gradients and gradient flows of the naive, projected, SiD and true objectives."""
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
    glossary = {"theta": "generator mean: x_g = theta + z, z ~ N(0, 1), so p_theta = N(theta, 1); data N(0, 1)",
                "psi": "mean of the fake score's model N(psi, 1); its optimum is psi*(theta) = theta",
                "sigma": "noise level: x_t = x_g + sigma eps", "alpha": "SiD's weight in L2 - alpha L1",
                "tau": "gradient-flow time", "theta0": "theta at tau = 0"}
    return Prop4("proposition4", claim, derived, holds, gradients, trajectories, limits, rates, learns,
                 glossary=glossary)


@dataclass(frozen=True)
class TwoTimescale(Proof):
    """Proposition 4 with a lagging fake score: the linear system d(theta, psi)/d tau = A (theta, psi).

    `drift` is A (rows: theta', psi'), `reduced` the coefficient of the quasi-steady flow theta' = reduced * theta
    (psi pinned at psi*(theta)), `eigenvalues` A's (slow, fast) pair, `trace`/`determinant`/`discriminant` decide
    stability (trace < 0 and determinant > 0) and oscillation (discriminant < 0), `critical_rate` is the eta below
    which the trace turns positive and `critical_alpha` the alpha at which the determinant crosses zero.
    """
    state: tuple[sp.Symbol, sp.Symbol]
    drift: sp.ImmutableMatrix
    reduced: sp.Expr
    eigenvalues: tuple[sp.Expr, sp.Expr]
    trace: sp.Expr
    determinant: sp.Expr
    discriminant: sp.Expr
    critical_rate: sp.Expr
    critical_alpha: sp.Expr
    fast_limit: sp.Expr
    alpha_free_at_unit_spread: bool


@functools.lru_cache(maxsize=1)
def two_timescale() -> TwoTimescale:
    """Proposition 4's Gaussian setting with psi fitted at a finite rate instead of held at psi*(theta).

    Data N(0, 1) gives the teacher f_phi; the generator is x_g = theta + s z (p_theta = N(theta, s^2), s fixed;
    s = 1 is Proposition 4); the fake score is the exact denoiser of N(psi, s^2), so psi*(theta) = theta. Two
    coupled gradient flows at one noise level sigma (Zhou et al. 2024, Algorithm 1 in continuous time):

        d theta/d tau = -E[d/d theta (L2 - alpha L1)]          psi held fixed (the generator step)
        d psi/d tau   = -eta E[d/d psi ||f_psi(x_t) - x_g||^2]   the denoising (fake-score) step at rate eta

    Both drifts come out linear in (theta, psi), so the system is d(theta, psi)/d tau = A (theta, psi). The
    derivation shows: at s = 1 A does not contain alpha, because f_phi - f_psi = -psi sigma^2/(1+sigma^2) is
    constant in x_t for every psi, not only at psi*; for s != 1 the slope of f_phi - f_psi is
    1/(1+sigma^2) - s^2/(s^2+sigma^2) != 0, L1 has a theta-gradient and alpha enters A. As eta -> oo the slow
    eigenvalue tends to the quasi-steady rate (psi = psi*(theta)), which at s = 1 is Proposition 4's flow.
    """
    sigma, s, eta = sp.symbols("sigma s eta", positive=True)
    theta, psi, alpha, z, eps, x_0, x_t = sp.symbols("theta psi alpha z eps x_0 x_t", real=True)
    _, f_phi = diffuse(x_t, x_0, 0, 1, 1, sigma)          # teacher: denoiser of p_data = N(0, 1)
    _, f_psi = diffuse(x_t, x_0, psi, s ** 2, 1, sigma)   # fake score: denoiser of N(psi, s^2)
    x_g = theta + s * z
    sample = {x_t: x_g + sigma * eps}
    y_phi, y_psi = f_phi.subs(sample), f_psi.subs(sample)
    L1, L2 = (y_phi - y_psi) ** 2, (y_phi - y_psi) * (y_phi - x_g)
    draws = ((z, 0, 1), (eps, 0, 1))
    theta_drift = -expectation(sp.diff(L2 - alpha * L1, theta), *draws)
    psi_drift = -eta * expectation(sp.diff((y_psi - x_g) ** 2, psi), *draws)
    drifts = sp.Matrix([theta_drift, psi_drift])
    A = drifts.jacobian([theta, psi]).applyfunc(sp.factor)
    linear = all(claim_holds(lhs, rhs) for lhs, rhs in zip(drifts, A * sp.Matrix([theta, psi])))

    psi_star = sp.solve(psi_drift, psi)[0]                # the fake score's fixed point for a given theta
    reduced = sp.factor(sp.diff(theta_drift.subs(psi, psi_star), theta))
    trace, determinant = sp.factor(A.trace()), sp.factor(A.det())
    discriminant = sp.factor(trace ** 2 - 4 * determinant)
    root = sp.sqrt(discriminant)
    eigenvalues = ((trace + root) / 2, (trace - root) / 2)   # slow, fast (when the trace is negative)
    critical_rate = sp.factor(sp.solve(trace, eta)[0])
    critical_alpha = sp.factor(sp.solve(determinant, alpha)[0])
    u = sp.Symbol("u", positive=True)                     # u = 1/eta
    fast_limit = sp.limit((determinant / eigenvalues[1]).subs(eta, 1 / u), u, 0)  # slow = det / fast
    fast_limit = sp.factor(fast_limit.replace(lambda e: e.is_Pow and e.exp == sp.S.Half,
                                              lambda e: sp.sqrt(sp.factor(e.base))))  # sqrt((1+sigma^2)^4)

    prop4_rate = proposition4().rates["sid"]
    unit = A.subs(s, 1)
    alpha_free = not unit.has(alpha) and A.has(alpha)
    equalities = [(psi_star, theta), (fast_limit, reduced), (reduced.subs(s, 1), -prop4_rate),
                  (eigenvalues[0] + eigenvalues[1], trace), (eigenvalues[0] * eigenvalues[1], determinant),
                  (determinant, A[1, 1] * reduced)]   # A22 < 0: det > 0 exactly when the quasi-steady flow contracts
    holds = linear and alpha_free and all(claim_holds(lhs, rhs) for lhs, rhs in equalities)
    claim = ("with psi fitted at rate eta, d(theta, psi)/d tau = A (theta, psi); alpha is absent from A when the "
             "generator's spread equals the data's (s = 1, Proposition 4) and present otherwise; as eta -> oo the "
             "slow eigenvalue tends to the psi = psi*(theta) flow, Proposition 4's rate at s = 1")
    if not holds:
        raise AssertionError(f"two_timescale: the derivation does not give the claim: {claim}")
    derived = {"theta_drift": sp.factor(theta_drift), "psi_drift": sp.factor(psi_drift), "psi_star": psi_star,
               "A11": A[0, 0], "A12": A[0, 1], "A21": A[1, 0], "A22": A[1, 1], "reduced": reduced, "trace": trace,
               "determinant": determinant, "discriminant": discriminant, "critical_rate": critical_rate,
               "critical_alpha": critical_alpha, "fast_limit": fast_limit, "A11_unit_spread": sp.factor(unit[0, 0]),
               "A12_unit_spread": sp.factor(unit[0, 1]), "f_phi": f_phi, "f_psi": f_psi,
               "d_trace_d_alpha": sp.factor(sp.diff(trace, alpha)), "d_reduced_d_alpha": sp.factor(sp.diff(reduced, alpha))}
    glossary = {"theta": "generator mean: x_g = theta + s z, z ~ N(0, 1); data N(0, 1)",
                "s": "the generator's fixed spread (s = 1 is Proposition 4; s != 1: the generator cannot match the data)",
                "psi": "the fake score's mean: f_psi is the denoiser of N(psi, s^2); psi*(theta) = theta",
                "sigma": "noise level: x_t = x_g + sigma eps", "alpha": "SiD's weight in L2 - alpha L1",
                "eta": "rate of the fake-score (denoising) flow relative to the generator's",
                "tau": "gradient-flow time of the generator"}
    return TwoTimescale("two_timescale", claim, derived, holds, (theta, psi), sp.ImmutableMatrix(A), reduced,
                        eigenvalues, trace, determinant, discriminant, critical_rate, critical_alpha, fast_limit,
                        alpha_free, glossary=glossary)


@functools.lru_cache(maxsize=1)
def _two_timescale_functions() -> tuple:
    system = two_timescale()
    args = [sp.Symbol(n, real=True) if n == "alpha" else sp.Symbol(n, positive=True) for n in ("alpha", "sigma", "s", "eta")]
    return (sp.lambdify(args, system.drift, "numpy"), sp.lambdify(args[:3], system.reduced, "math"),
            sp.lambdify(args[:3], system.critical_rate, "numpy"))


def two_timescale_drift(alpha: float, sigma: float, s: float, eta: float):
    """The drift matrix A of `two_timescale` at a point, as a 2x2 numpy array (rows: theta', psi')."""
    import numpy as np
    return np.asarray(_two_timescale_functions()[0](alpha, sigma, s, eta), dtype=float)


def two_timescale_reduced_rate(alpha: float, sigma: float, s: float) -> float:
    """The quasi-steady coefficient (theta' = rate * theta with psi = psi*(theta)) at a point."""
    return float(_two_timescale_functions()[1](alpha, sigma, s))


def two_timescale_critical_rate(alpha, sigma: float, s: float):
    """The critical rate eta_c of `two_timescale` (stable for eta > eta_c), elementwise over an array of alpha."""
    import numpy as np
    return np.broadcast_to(np.asarray(_two_timescale_functions()[2](alpha, sigma, s), dtype=float), np.shape(alpha))


@functools.lru_cache(maxsize=1)
def _prop4_functions() -> dict:
    theta, sigma, alpha = sp.Symbol("theta", real=True), sp.Symbol("sigma", positive=True), sp.Symbol("alpha", real=True)
    return {name: sp.lambdify((theta, sigma, alpha), grad, "math")
            for name, grad in proposition4().gradients.items()}


def prop4_gradients(theta: float, sigma: float, alpha: float) -> dict[str, float]:
    """Closed-form Proposition 4 theta-gradients ('naive', 'projected', 'sid', 'true') at a point."""
    return {name: float(f(theta, sigma, alpha)) for name, f in _prop4_functions().items()}


def all_proofs() -> list[Proof]:
    return [tweedie(), score_projection(), projected_score_matching(), proposition4(), two_timescale()]
