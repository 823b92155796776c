"""Page 1: Tweedie, score projection and projected score matching, symbolic next to Monte Carlo."""
import numpy as np
import streamlit as st
import sympy as sp
import torch

from apps.common import proofs, setup, show
from toy import montecarlo
from toy.families import Gaussian
from toy.targets import make_target

setup()
st.title("SiD's score identities")
st.markdown("Each identity is derived symbolically by `toy/proofs.py` (the formula below is sympy's result) "
            "and checked by Monte Carlo with autograd on an exact family (`toy/montecarlo.py`).")

family_name = st.selectbox("Data family (1-D, exact)", ["mixture1d", "gaussian1d"])
sigma = st.slider("Noise level sigma", 0.05, 3.0, 0.7, 0.05)
samples = st.select_slider("Monte Carlo samples", [10_000, 50_000, 200_000], value=50_000)


@st.cache_data
def checks(family_name: str, sigma: float, n: int) -> dict:
    family = make_target(family_name).double()
    teacher = Gaussian(torch.zeros(1, dtype=torch.float64), torch.eye(1, dtype=torch.float64))
    generator = Gaussian(torch.full((1,), 0.8, dtype=torch.float64), torch.full((1, 1), 0.5, dtype=torch.float64))
    left, right = montecarlo.score_projection_checks(family, sigma, n)
    rows = {"Tweedie": montecarlo.tweedie_check(family, sigma, n),
            "Score projection (marginal side)": left, "Score projection (conditional side)": right,
            "Projected score matching": montecarlo.projected_score_matching_check(teacher, generator, sigma, n)}
    return {k: {"estimate": c.estimate, "closed_form": c.closed_form, "stderr": c.stderr, "passes": c.passes()}
            for k, c in rows.items()}


results = checks(family_name, sigma, samples)
derived = proofs()
formulas = {
    "Tweedie": ("tweedie", "posterior_mean", "tweedie_rhs"),
    "Score projection (marginal side)": ("score_projection", "marginal_side", "conditional_side"),
    "Score projection (conditional side)": ("score_projection", "marginal_side", "conditional_side"),
    "Projected score matching": ("projected_score_matching", "fisher", "projected"),
}
for name, (proof, lhs, rhs) in formulas.items():
    left, right = st.columns([3, 2])
    with left:
        st.subheader(name)
        st.caption(derived[proof].claim)
        st.latex(sp.latex(derived[proof].derived[lhs]) + " = " + sp.latex(derived[proof].derived[rhs]))
    with right:
        r = results[name]
        st.metric("Monte Carlo estimate", f"{r['estimate']:.4f}", help=f"standard error {r['stderr']:.2g}")
        st.metric("Closed form", f"{r['closed_form']:.4f}")
        st.write(f"standard error {r['stderr']:.2g} — " + ("within 4 standard errors ✅" if r["passes"] else "outside ❌"))


@st.cache_data
def curves(family_name: str, sigma: float) -> dict:
    family = make_target(family_name).double()
    x = torch.linspace(-5, 5, 400, dtype=torch.float64)[:, None]
    levels = sorted({0.05, 0.5, 1.5, round(sigma, 3)})
    out = {"x": x[:, 0].numpy(), "levels": levels}
    for s in levels:
        out[s] = (family.log_prob(x, s).exp().numpy(), family(x, s)[:, 0].numpy(), family.score(x, s)[:, 0].numpy())
    return out


st.subheader("Exact noisy densities, denoisers and scores")
c = curves(family_name, sigma)
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for s in c["levels"]:
    density, denoiser, score = c[s]
    style = dict(lw=2.2 if np.isclose(s, sigma) else 1.0, label=f"sigma={s:g}")
    axes[0].plot(c["x"], density, **style)
    axes[1].plot(c["x"], denoiser, **style)
    axes[2].plot(c["x"], score, **style)
for ax, title in zip(axes, ["p(x_t)", "E[x_0 | x_t] (the denoiser f)", "grad log p(x_t)"]):
    ax.set(title=title, xlabel="x_t")
axes[2].set_ylim(-8, 8)
axes[0].legend(fontsize=8)
fig.tight_layout()
show(fig)
