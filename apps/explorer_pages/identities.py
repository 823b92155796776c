"""Page 1: Tweedie, score projection and projected score matching, symbolic next to Monte Carlo.

Each identity shows its claim, what its symbols mean, the left and the right side as sympy derived them (by exact
Gaussian integration in `toy.proofs`), and their difference simplified to 0. Beside it, the Monte Carlo check on
the chosen 1-D family: the quantity each row estimates, its closed form with the family's numbers, the estimate and
its standard error (Zhou et al. 2024, Identities 1-2 and Theorem 5).
"""
from __future__ import annotations

from functools import partial

import streamlit as st
import sympy as sp
import torch

from apps import plots
from apps.common import latex, proofs, setup, show
from toy import montecarlo
from toy.families import Gaussian
from toy.targets import make_target

GREEK = {"sigma", "theta", "mu", "alpha", "psi", "eta", "tau", "phi", "epsilon"}
PSM_TEACHER, PSM_GENERATOR = (0.0, 1.0), (0.8, 0.5)  # (mean, variance) of the fixed Gaussians of that check

setup()
st.title("SiD's score identities")
st.markdown("Each identity is derived symbolically by `toy/proofs.py`: sympy integrates against the Gaussian "
            "densities, and the two sides below are its results, before any simplification towards each other. "
            "Beside each, a Monte Carlo check with autograd (`toy/montecarlo.py`) on the family you choose.")

family_name = st.selectbox("Data family for the Monte Carlo checks (1-D, exact)", ["mixture1d", "gaussian1d"],
                           format_func={"mixture1d": "two-component Gaussian mixture",
                                        "gaussian1d": "standard Gaussian"}.get)
sigma = st.slider("Noise level sigma", 0.05, 3.0, 0.7, 0.05)
samples = st.select_slider("Monte Carlo samples", [10_000, 50_000, 200_000], value=50_000)


def symbol_tex(name: str) -> str:
    """'sigma' -> \\sigma, 'c_k' -> c_k, 'k_0, k_1' -> k_0, k_1, 'theta0' -> \\theta_0."""
    parts = []
    for part in name.split(","):
        part = part.strip()
        base, _, sub = part.partition("_")
        if not sub and base[-1:].isdigit():
            base, sub = base.rstrip("0123456789"), base[len(base.rstrip("0123456789")):]
        base = "\\" + base if base in GREEK else base
        parts.append(base + (f"_{{{sub}}}" if sub else ""))
    return ", ".join(parts)


def glossary(proof) -> None:
    st.markdown("  \n".join(f"${symbol_tex(k)}$: {v}" for k, v in proof.glossary.items()))


@st.cache_data
def family_formula(family_name: str, sigma: float) -> tuple[str, str, dict]:
    """LaTeX of p(x_0) and p(x_t) with the family's numbers, and the moments the closed forms use."""
    family = make_target(family_name).double()
    w, m, v = family.weights.tolist(), family.means[:, 0].tolist(), family.covs[:, 0, 0].tolist()
    a = family.a

    def mixture(x: str, means, variances) -> str:
        terms = [f"\\mathcal N({x};\\,{mu:g},\\,{var:.4g})" for mu, var in zip(means, variances)]
        return terms[0] if len(terms) == 1 else " + ".join(f"{wk:g}\\,{t}" for wk, t in zip(w, terms))

    x0 = "p(x_0) = " + mixture("x_0", m, v)
    xt = ("p(x_t) = \\textstyle\\sum_k \\pi_k \\mathcal N(x_t;\\,a\\mu_k,\\,a^2 s_k^2+\\sigma^2) = "
          + mixture("x_t", [a * mu for mu in m], [a * a * var + sigma ** 2 for var in v]))
    mean, cov = family.moments()
    clean = lambda v: round(float(v), 6) + 0.0  # noqa: E731 (float32 moments: no -0.0000)
    return x0, xt, {"a": a, "mean": clean(mean.item()), "second": clean((cov[0, 0] + mean[0] ** 2).item())}


@st.cache_data
def checks(family_name: str, sigma: float, n: int) -> dict:
    family = make_target(family_name).double()
    teacher = Gaussian(torch.tensor([PSM_TEACHER[0]], dtype=torch.float64),
                       torch.tensor([[PSM_TEACHER[1]]], dtype=torch.float64))
    generator = Gaussian(torch.tensor([PSM_GENERATOR[0]], dtype=torch.float64),
                         torch.tensor([[PSM_GENERATOR[1]]], dtype=torch.float64))
    left, right = montecarlo.score_projection_checks(family, sigma, n)
    rows = {"tweedie": montecarlo.tweedie_check(family, sigma, n), "marginal": left, "conditional": right,
            "psm": montecarlo.projected_score_matching_check(teacher, generator, sigma, n)}
    return {k: {"estimate": c.estimate, "closed_form": c.closed_form, "stderr": c.stderr, "passes": c.passes()}
            for k, c in rows.items()}


@st.cache_resource
def difference(proof_name: str, lhs_key: str, rhs_key: str) -> sp.Expr:
    """left - right as sympy simplifies it (rational normal form)."""
    d = proofs()[proof_name].derived
    return sp.cancel(sp.expand(d[lhs_key] - d[rhs_key]))


def collected(expr: sp.Expr, names: tuple[str, ...]) -> sp.Expr:
    """expr as a sum over powers of the named symbols with factored coefficients (readable, same value)."""
    symbols = sorted((s for s in expr.free_symbols if s.name in names), key=lambda s: s.name)
    return sp.collect(sp.expand(expr), symbols, sp.factor) if symbols else expr


@st.cache_data(show_spinner=False)
def side_tex(proof_name: str, key: str, prefix: str, collect: tuple[str, ...]) -> str:
    """A derived expression as LaTeX (`collected` over `collect`, if given), laid out once per server: expanding,
    collecting and factoring take a tenth of a second or more per page, and no widget changes them."""
    expr = proofs()[proof_name].derived[key]
    return latex(collected(expr, collect) if collect else expr, prefix=prefix, width=110)


def monte_carlo(title: str, estimated: str, closed: str, r: dict) -> None:
    """One Monte Carlo row: what is estimated, its closed form (each a LaTeX line or an aligned block), the numbers."""
    st.markdown(f"**{title}**")
    st.latex(estimated)
    st.latex(closed)
    cols = st.columns(2)
    cols[0].metric("Monte Carlo estimate", f"{r['estimate']:.4f}", help=f"standard error {r['stderr']:.2g}")
    cols[1].metric("Closed form", f"{r['closed_form']:.4f}")
    st.write(f"standard error {r['stderr']:.2g}: " + ("within 4 standard errors ✓" if r["passes"] else
                                                    "**outside 4 standard errors ✗**"))


def derivation(proof_name: str, statement: str, sides: list[tuple[str, str, str]], lhs: str, rhs: str,
               collect: tuple[str, ...] = ()) -> None:
    """The claim, the symbols, each side as derived, and left - right simplified."""
    proof = proofs()[proof_name]
    st.markdown("**Claim**")
    st.latex(statement)
    with st.expander("What the symbols mean", expanded=True):
        glossary(proof)
    for title, tex_prefix, key in sides:
        if title:
            st.markdown(title)
        st.latex(side_tex(proof_name, key, tex_prefix, collect if key in (lhs, rhs) else ()))
    st.markdown("**Left side minus right side**, simplified by sympy (`cancel`):")
    result = difference(proof_name, lhs, rhs)
    st.latex(r"\text{left} - \text{right} = " + sp.latex(result) + (r"\quad\checkmark" if result == 0 else ""))


x0_tex, xt_tex, moments = family_formula(family_name, sigma)
results = checks(family_name, sigma, samples)
st.subheader("The family of the Monte Carlo checks")
st.latex(x0_tex)
st.latex(xt_tex)
st.caption(f"with a = {moments['a']:g} and sigma = {sigma:g}. The symbolic derivations below hold for any Gaussian "
           "(symbols a, s, mu, theta, ...); the Monte Carlo checks run on this family (the projected score matching "
           "check on two fixed Gaussians, as stated there).")

# --------------------------------------------------------------------------- Tweedie
st.header("1. Tweedie's formula")
left, right = st.columns([3, 2], gap="large")
with left:
    derivation("tweedie", r"\begin{aligned} &\mathbb{E}[x_0 \mid x_t] = \frac{x_t + \sigma^2\, \partial_{x_t} \log p(x_t)}{a},"
               r"\\ &x_0 \sim \mathcal N(\mu, s^2),\; x_t = a x_0 + \sigma \varepsilon \end{aligned}",
               [("**Left side**, integrating $x_0$ against $p(x_0)\\,q(x_t\\mid x_0)$:", r"\mathbb{E}[x_0 \mid x_t] = ",
                 "posterior_mean"),
                ("with the score of the derived marginal $p(x_t)$:", r"\partial_{x_t} \log p(x_t) = ", "score"),
                ("**Right side**, that score put into the formula:", r"\frac{x_t + \sigma^2 \partial_{x_t}\log p(x_t)}{a} = ",
                 "tweedie_rhs_as_derived")], "posterior_mean", "tweedie_rhs_as_derived")
with right:
    monte_carlo("Monte Carlo on the family above (the score by autograd)",
                r"\begin{aligned} &\mathbb{E}_{x_t \sim p(x_t)}\big[D(x_t)\, x_t\big], \\ "
                r"&D(x_t) = \frac{x_t + \sigma^2 \nabla \log p(x_t)}{a} \end{aligned}",
                r"\begin{aligned} &= a\,\mathbb{E}[x_0^2]\ \text{ if } D \text{ is the posterior mean} \\ "
                rf"&= {moments['a']:g} \times {moments['second']:.4f} \end{{aligned}}", results["tweedie"])

# --------------------------------------------------------------------------- score projection
st.header("2. Score projection")
left, right = st.columns([3, 2], gap="large")
with left:
    derivation("score_projection",
               r"\begin{aligned} &\mathbb{E}_{x_t \sim p_\theta(x_t)}\big[u(x_t)\, \partial_{x_t}\log p_\theta(x_t)\big] \\ "
               r"=\ &\mathbb{E}_{x_g \sim p_\theta,\; x_t \sim q(x_t \mid x_g)}\big[u(x_t)\, \partial_{x_t}\log q(x_t \mid x_g)\big]"
               r"\end{aligned}",
               [("**Left side**: the marginal score of $p_\\theta(x_t)$ inside, integrated over "
                 "$x_t \\sim \\mathcal N(a\\theta, a^2 s^2 + \\sigma^2)$:", r"u(x_t)\,\partial_{x_t}\log p_\theta(x_t) = ",
                 "marginal_integrand"),
                ("", r"\mathbb{E}[\,\cdot\,] = ", "marginal_side"),
                ("**Right side**: the conditional score of $q(x_t \\mid x_g) = \\mathcal N(a x_g, \\sigma^2)$ inside, "
                 "integrated over $x_t$ given $x_g$, then over $x_g$:", r"u(x_t)\,\partial_{x_t}\log q(x_t \mid x_g) = ",
                 "conditional_integrand"),
                ("", r"\mathbb{E}[\,\cdot\,] = ", "conditional_side")], "marginal_side", "conditional_side",
               collect=("c0", "c1", "c2", "c3"))
with right:
    stein = (r"\begin{aligned} &= -\mathbb{E}[u'(x_t)] = -\big(c_1 + 2 c_2\, a\,\mathbb{E}[x_0]\big), \\ "
             rf"&\mathbb{{E}}[x_0] = {moments['mean']:.4f} \end{{aligned}}")
    st.caption("Both rows use u(x) = c_0 + c_1 x + c_2 x^2 with fixed random coefficients and share one closed form "
               "(Stein's identity). They differ in which score multiplies u:")
    monte_carlo("Marginal side: the exact noisy score of the family",
                r"\mathbb{E}_{x_t \sim p(x_t)}\big[u(x_t)\, \nabla_{x_t} \log p(x_t)\big]", stein, results["marginal"])
    monte_carlo("Conditional side: only the Gaussian noise's score",
                r"\mathbb{E}_{x_0,\, x_t}\Big[u(x_t)\, \Big(-\frac{x_t - a x_0}{\sigma^2}\Big)\Big]", stein,
                results["conditional"])

# --------------------------------------------------------------------------- projected score matching
st.header("3. Projected score matching (Theorem 5)")
left, right = st.columns([3, 2], gap="large")
with left:
    derivation("projected_score_matching",
               r"\begin{aligned} &\mathbb{E}\big[(S_\phi - \partial_{x_t}\log p_\theta)^2\big] \\ =\ "
               r"&\mathbb{E}\big[(S_\phi - \partial_{x_t}\log p_\theta)(S_\phi - \partial_{x_t}\log q(x_t \mid x_g))\big]"
               r"\end{aligned}",
               [("**Left side**: the Fisher divergence of a linear $S_\\phi(x_t) = k_1 x_t + k_0$ from $p_\\theta$'s "
                 "score:", r"(S_\phi - \partial\log p_\theta)^2 = ", "fisher_integrand"),
                ("", r"\mathbb{E}[\,\cdot\,] = ", "fisher"),
                ("**Right side**: one factor projected onto the conditional score:",
                 r"(S_\phi - \partial\log p_\theta)(S_\phi - \partial\log q) = ", "projected_integrand"),
                ("", r"\mathbb{E}[\,\cdot\,] = ", "projected")], "fisher", "projected", collect=("k0", "k1"))
with right:
    (mt, vt), (mg, vg) = PSM_TEACHER, PSM_GENERATOR
    st.caption("This check uses two fixed Gaussians, whatever the family above: the teacher "
               f"N({mt:g}, {vt:g}) gives S_phi and the generator is N({mg:g}, {vg:g}).")
    monte_carlo("Monte Carlo: the projected form, sampled",
                r"\begin{aligned} \mathbb{E}_{x_g, x_t}\big[&(S_\phi - \nabla \log p_\theta) \\ "
                r"\times\, &(S_\phi - \nabla\log q(x_t \mid x_g))\big] \end{aligned}",
                r"\begin{aligned} &= \mathbb{E}_{p_\theta}(\nabla\log p_\phi - \nabla\log p_\theta)^2 = M^2 v_\theta + (M m_\theta + b)^2,"
                r"\\ &M = \tfrac{1}{v_\theta} - \tfrac{1}{v_\phi},\ b = \tfrac{m_\phi}{v_\phi} - \tfrac{m_\theta}{v_\theta},"
                r"\ v = \text{variance} + \sigma^2 \end{aligned}", results["psm"])


# --------------------------------------------------------------------------- curves
@st.cache_data
def curves(family_name: str, sigma: float) -> dict:
    family = make_target(family_name).double()
    x = torch.linspace(-5, 5, 400, dtype=torch.float64)[:, None]
    levels = sorted({0.05, 0.5, 1.5, round(sigma, 3)})
    out = {"x": x[:, 0].numpy(), "levels": levels, "curves": {}}
    for s in levels:
        out["curves"][s] = (family.log_prob(x, s).exp().numpy(), family(x, s)[:, 0].numpy(),
                            family.score(x, s)[:, 0].numpy())
    return out


st.header("Exact noisy densities, denoisers and scores of the family")
c = curves(family_name, sigma)
show(partial(plots.family_curves, x=c["x"], levels=c["levels"], sigma=sigma, curves=c["curves"]), figsize=(13, 3.8))
