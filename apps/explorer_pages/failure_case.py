"""Page 2: Proposition 4. Why the naive loss cannot learn and SiD converges exponentially."""
import matplotlib.pyplot as plt
import numpy as np
import streamlit as st
import sympy as sp

from apps.common import proofs, setup, show
from toy.montecarlo import prop4_gradients_mc

setup()
st.title("The failure case (Proposition 4)")
st.markdown(r"""
Data $p_{data}=\mathcal N(0,1)$, generator $p_\theta=\mathcal N(\theta,1)$, fake score fitted exactly
($\psi=\psi^*(\theta)=\theta$) and **held fixed** while $G$ moves. Then $f_\phi-f_\psi$ does not depend on
$x_t$, so the naive loss $L_1=\|f_\phi-f_\psi\|^2$ gives the generator **no gradient at all**, while the
projected loss $L_2$ (and SiD's $L_2-\alpha L_1$) gives one proportional to $\theta$.
""")

theta = st.slider("theta (generator mean)", -3.0, 3.0, 1.0, 0.1)
sigma = st.slider("sigma (noise level)", 0.05, 3.0, 1.0, 0.05)
alpha = st.slider("alpha (SiD)", 0.0, 2.0, 1.2, 0.1)

prop4 = proofs()["proposition4"]
symbols = {s.name: s for expr in prop4.gradients.values() for s in expr.free_symbols}
names = {"naive": "naive L1", "projected": "projected L2", "sid": "SiD L2 - alpha L1", "true": "true gradient"}


def evaluate(expr, **values):
    subs = {symbols[k]: v for k, v in values.items() if k in symbols}
    return float(expr.subs(subs)) if not isinstance(expr, (int, float)) else float(expr)


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
thetas = np.linspace(-3, 3, 61)
taus = np.linspace(0, 20, 200)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
for key, label in names.items():
    grad = sp.lambdify([s for s in symbols.values()], prop4.gradients[key], "numpy")
    flow = prop4.trajectories[key]
    flow_symbols = sorted(flow.free_symbols, key=lambda s: s.name)
    flow_fn = sp.lambdify(flow_symbols, flow, "numpy")
    values = {"theta": thetas, "sigma": sigma, "alpha": alpha, "theta0": theta, "tau": taus}
    g = grad(*[values[s.name] for s in symbols.values()]) * np.ones_like(thetas)
    ax1.plot(thetas, g, label=label, ls="--" if key == "sid" else "-")
    ax2.plot(taus, flow_fn(*[values[s.name] for s in flow_symbols]) * np.ones_like(taus), label=label,
             ls="--" if key == "sid" else "-")
ax1.set(xlabel="theta", ylabel="E[d loss / d theta]", title=f"sigma={sigma:g}, alpha={alpha:g}")
ax2.set(xlabel="tau (gradient-flow time)", ylabel="theta(tau)", title=f"theta(0)={theta:g}")
ax1.axhline(0, color="gray", lw=0.5)
ax2.axhline(0, color="gray", lw=0.5)
ax1.legend(fontsize=8)
fig.tight_layout()
show(fig)

learns = {names[k]: ("learns, rate " + f"{evaluate(prop4.rates[k], sigma=sigma):.3f}") if prop4.learns[k]
          else "cannot learn: theta stays at theta0" for k in names}
st.table({"objective": list(learns), "gradient flow": list(learns.values())})
