"""Page 2: Proposition 4. Why the naive loss cannot learn, why alpha drops out there, and what alpha does once the
fake score lags behind the generator (the two-timescale system derived in `toy.proofs.two_timescale`)."""
from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st
import sympy as sp
from scipy.linalg import expm

from apps import plots
from apps.common import latex, proofs, setup, show
from toy.montecarlo import prop4_gradients_mc
from toy.proofs import two_timescale_critical_rate as critical
from toy.proofs import two_timescale_drift as drift
from toy.proofs import two_timescale_reduced_rate as reduced

setup()
st.title("The failure case (Proposition 4)")
st.markdown(r"""
Data $p_{data}=\mathcal N(0,1)$, generator $p_\theta=\mathcal N(\theta,1)$ ($x_g = \theta + z$), fake score fitted
exactly ($\psi=\psi^*(\theta)=\theta$) and **held fixed** while $G$ moves. The naive loss $L_1=\|f_\phi-f_\psi\|^2$
then gives the generator **no gradient at all**, while the projected loss $L_2=(f_\phi-f_\psi)^\top(f_\phi-x_g)$ (and
SiD's $L_2-\alpha L_1$) gives one proportional to $\theta$.
""")

prop4 = proofs()["proposition4"]
system = proofs()["two_timescale"]
d = prop4.derived
symbols = {s.name: s for expr in prop4.gradients.values() for s in expr.free_symbols}
names = {"naive": "naive L1", "projected": "projected L2", "sid": "SiD L2 - alpha L1", "true": "true gradient"}

st.subheader("Why alpha drops out")
gap = sp.factor(d["f_phi"] - d["f_psi"])
psi, theta_symbol = sp.Symbol("psi", real=True), sp.Symbol("theta", real=True)
st.latex(r"f_\phi(x_t) = " + sp.latex(d["f_phi"]) + r",\qquad f_\psi(x_t) = " + sp.latex(d["f_psi"]))
st.latex(r"f_\phi(x_t) - f_\psi(x_t) = " + sp.latex(gap) + r"\;\overset{\psi = \psi^*(\theta)}{=}\;"
         + sp.latex(gap.subs(psi, theta_symbol)))
st.markdown(r"""The teacher and the fake score have the same slope in $x_t$ (both data and generator have variance 1),
so their difference is a **constant**: $L_1 = \|f_\phi - f_\psi\|^2$ does not depend on $x_g$, and with $\psi$ held at
$\psi^*(\theta)$ its gradient through $x_g$ vanishes. SiD's gradient is then $L_2$'s for every $\alpha$: the $-\alpha L_1$
term changes nothing. (The "true" gradient also moves $\psi^*(\theta)$ with $\theta$, which a generator step never does.)""")

theta = st.slider("theta (generator mean)", -3.0, 3.0, 1.0, 0.1)
sigma = st.slider("sigma (noise level)", 0.05, 3.0, 1.0, 0.05)
alpha = st.slider("alpha (SiD)", 0.0, 2.0, 1.2, 0.1)


@st.cache_resource
def prop4_functions() -> dict:
    """numpy functions of each gradient (theta, sigma, alpha) and flow (sigma, tau, theta0), from the sympy results."""
    order = [symbols[n] for n in ("theta", "sigma", "alpha") if n in symbols]
    grads = {k: sp.lambdify(order, prop4.gradients[k], "numpy") for k in names}
    flows = {}
    for k in names:
        flow = prop4.trajectories[k]
        flow_symbols = sorted(flow.free_symbols, key=lambda s: s.name)
        flows[k] = (sp.lambdify(flow_symbols, flow, "numpy"), [s.name for s in flow_symbols])
    return {"grads": grads, "flows": flows, "order": [s.name for s in order]}


def evaluate(expr, **values) -> float:
    return float(expr.subs({s: values[s.name] for s in expr.free_symbols}))


@st.cache_data
def monte_carlo(theta: float, sigma: float, alpha: float) -> dict:
    return prop4_gradients_mc(theta, sigma, alpha, n=20_000, chunks=20)


mc = monte_carlo(theta, sigma, alpha)
cols = st.columns(4)
for col, (key, label) in zip(cols, names.items()):
    closed = evaluate(prop4.gradients[key], theta=theta, sigma=sigma, alpha=alpha)
    col.metric(f"{label}: d/dtheta", f"{closed:.4f}")
    col.caption(f"Monte Carlo {mc[key][0]:.4f} ± {mc[key][1]:.1g}")
    col.latex(sp.latex(prop4.gradients[key]))

st.subheader("Gradients against theta, and the gradient flows they produce")
f = prop4_functions()
thetas, taus = np.linspace(-3, 3, 61), np.linspace(0, 20, 200)
values = {"theta": thetas, "sigma": sigma, "alpha": alpha, "theta0": theta, "tau": taus}
gradients = {k: np.broadcast_to(g(*[values[n] for n in f["order"]]), thetas.shape) for k, g in f["grads"].items()}
flows = {k: np.broadcast_to(fn(*[values[n] for n in args]), taus.shape) for k, (fn, args) in f["flows"].items()}
show(partial(plots.prop4_panels, thetas=thetas, gradients=gradients, taus=taus, flows=flows, labels=names, sigma=sigma,
             alpha=alpha, theta0=theta), figsize=(12, 4))
st.caption("The SiD line (dashed, dots) lies exactly on the projected L2 line (wide, pale) for every alpha.")


def rate_text(rate: float) -> str:
    return f"{rate:.3g}" if rate else "0"


learns = {names[k]: (f"learns: theta(tau) = theta0 exp(-{rate_text(evaluate(prop4.rates[k], sigma=sigma))} tau)"
                     if prop4.learns[k] else "cannot learn: theta stays at theta0") for k in names}
st.table({"objective": list(learns), "gradient flow at this sigma": list(learns.values())})

# --------------------------------------------------------------------------- the lagging fake score
st.header("When f_psi lags behind: a two-timescale system")
st.markdown(r"""In practice $\psi$ is not at $\psi^*(\theta)$: SiD alternates a fake-score step and a generator step, so
$f_\psi$ is fitted at a finite rate and **lags**. In continuous time, at one noise level $\sigma$:""")
st.latex(r"\frac{d\theta}{d\tau} = -\,\mathbb{E}\Big[\frac{\partial}{\partial\theta}\big(L_2 - \alpha L_1\big)\Big]_{\psi\ \text{fixed}},"
         r"\qquad \frac{d\psi}{d\tau} = -\,\eta\;\mathbb{E}\Big[\frac{\partial}{\partial\psi}\,\|f_\psi(x_t) - x_g\|^2\Big]")
st.markdown(r"""with a generator of fixed spread $s$ ($x_g = \theta + s z$, $f_\psi$ the denoiser of $\mathcal N(\psi, s^2)$, so
$\psi^*(\theta) = \theta$; $s = 1$ is Proposition 4). sympy (`toy.proofs.two_timescale`) derives both drifts: they are
linear, $\tfrac{d}{d\tau}(\theta, \psi)^\top = A\,(\theta, \psi)^\top$, with""")

c1, c2 = st.columns(2)
eta = c1.select_slider("eta (rate of the fake-score flow)", [0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0],
                       value=0.5)
spread = c2.slider("s (the generator's spread; 1 = Proposition 4)", 0.5, 1.5, 0.7, 0.05)
tt = system.derived
A_tex = sp.latex(sp.Matrix([[tt["A11"], tt["A12"]], [tt["A21"], tt["A22"]]]))
st.latex(r"A = " + A_tex)
st.latex(r"A\big|_{s=1} = " + sp.latex(sp.Matrix([[tt["A11_unit_spread"], tt["A12_unit_spread"]],
                                                   [tt["A21"].subs(sp.Symbol("s", positive=True), 1),
                                                    tt["A22"].subs(sp.Symbol("s", positive=True), 1)]])))
st.markdown(r"""**What alpha does** (read off the derived $A$):
- At $s = 1$, $\alpha$ is absent from $A$ even though $\psi$ lags: $f_\phi - f_\psi = -\psi\sigma^2/(1+\sigma^2)$ is
  constant in $x_t$ for *every* $\psi$, so $L_1$ never has a $\theta$-gradient. The lag alone makes $\theta$ overshoot
  and oscillate when $\eta$ is small.
- For $s \ne 1$ the slopes differ, $f_\phi - f_\psi$ varies with $x_t$, and $\alpha$ enters $A_{11}$ and $A_{12}$.""")
st.latex(r"\frac{\partial\,\mathrm{tr}A}{\partial\alpha} = " + sp.latex(tt["d_trace_d_alpha"]) + r"\;\ge 0,\qquad "
         r"\frac{\partial\,\lambda_{\text{quasi-steady}}}{\partial\alpha} = " + sp.latex(tt["d_reduced_d_alpha"]))
st.markdown(r"""- A larger $\alpha$ always raises the trace, so it **demands a faster fake score**: the system is stable
  only while $\eta > \eta_c(\alpha)$ (below). With $\eta$ too small for the chosen $\alpha$, $\theta$ spirals away.
- With $\psi$ pinned at $\psi^*(\theta)$ (the limit $\eta\to\infty$, where the slow eigenvalue tends to the quasi-steady
  rate below, Proposition 4's rate at $s=1$), a larger $\alpha$ converges faster when the generator is narrower than the
  data ($s<1$) and slower when it is wider ($s>1$), where beyond $\alpha_c$ the flow diverges.""")
st.latex(latex(tt["critical_rate"], prefix=r"\eta_c(\alpha) = ") + r",\qquad "
         + r"\lambda_{\text{quasi-steady}} = " + sp.latex(tt["reduced"]))
st.latex(r"\lambda_{1,2} = \tfrac12\big(\mathrm{tr}A \pm \sqrt{(\mathrm{tr}A)^2 - 4\det A}\big),\qquad "
         r"\alpha_c = " + sp.latex(tt["critical_alpha"]) + r"\ (\det A = 0)")


A = drift(alpha, sigma, spread, eta)
eigenvalues = sorted(np.linalg.eigvals(A), key=lambda z: -z.real)
stable = max(z.real for z in eigenvalues) < 0
oscillates = abs(eigenvalues[0].imag) > 1e-12
cols = st.columns(3)
if oscillates:
    cols[0].metric("eigenvalues of A", f"{eigenvalues[0].real + 0.0:.3g} ± {abs(eigenvalues[0].imag):.3g}i",
                   help="a complex pair: theta and psi spiral (period 2 pi / |Im|)")
else:
    cols[0].metric("eigenvalues of A", f"{eigenvalues[0].real + 0.0:.3g} (slow), {eigenvalues[1].real + 0.0:.3g} (fast)")
cols[1].metric("critical rate eta_c", f"{float(critical(alpha, sigma, spread)) + 0.0:.3g}",
               help="the trace of A is negative exactly when eta exceeds this")
cols[2].metric("dynamics", ("stable" if stable else "unstable") + (", oscillating" if oscillates else ""))

alphas_shown = sorted({0.0, 0.5, 1.0, 1.2, 2.0, round(alpha, 2)})
start = (theta if theta else 1.0, 0.0)  # f_psi starts as a copy of the teacher (psi = data mean 0), as in SiD
rate = abs(reduced(1.0, sigma, spread)) or 1.0
times = np.linspace(0, min(6 / rate, 200.0), 240)
paths, pinned = {}, {}
for a in alphas_shown:  # x(t + dt) = expm(A dt) x(t): exact on the uniform time grid
    step = expm(drift(a, sigma, spread, eta) * (times[1] - times[0]))
    path = [np.array(start)]
    for _ in times[1:]:
        path.append(step @ path[-1])
    paths[a] = np.array(path)
    pinned[a] = start[0] * np.exp(reduced(a, sigma, spread) * times)
show(partial(plots.two_timescale_panels, taus=times, paths=paths, quasi_steady=pinned, start=start), figsize=(12, 4.6))
st.caption(f"Start: theta = {start[0]:g}, psi = 0 (f_psi starts as a copy of the teacher, as in SiD); sigma = {sigma:g}, "
           f"s = {spread:g}, eta = {eta:g}.")
alpha_grid = np.linspace(-0.5, 3.0, 141)
spectrum = np.array([sorted(np.linalg.eigvals(drift(a, sigma, spread, eta)),
                            key=lambda z: -z.real) for a in alpha_grid])
critical_rates = critical(alpha_grid, sigma, spread)
show(partial(plots.eigenvalue_panels, alphas=alpha_grid, eigenvalues=spectrum, alpha=alpha, etas=np.array([eta, max(
    4 * eta, float(np.nanmax(critical_rates)) * 1.2, 0.1)]), critical_rates=critical_rates), figsize=(12, 4))
