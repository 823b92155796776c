"""Page 3: toy SiD (or a peer loss) on an exact 2-D teacher, trained live in a fragment."""
import matplotlib.pyplot as plt
import numpy as np
import streamlit as st
import torch

from apps.common import setup, show
from toy.distill import TOY_LOSSES, ToyConfig, ToyDistillation

setup()
st.title("Toy distillation, live")
st.markdown("The teacher is the exact mixture denoiser. Arrows show the teacher field f_phi(x) - x and the "
            "fake-score field f_psi(x) - x at sigma = 0.5; the curve is the energy distance to the target.")

with st.sidebar:
    target = st.selectbox("Target", ["8gaussians", "overlap2d", "gaussian2d"])
    generator = st.selectbox("Generator", ["mlp", "affine"])
    loss = st.selectbox("Loss", TOY_LOSSES)
    alpha = st.slider("alpha (SiD only)", 0.0, 2.0, 1.0, 0.1)
    lr = st.select_slider("Learning rate of G", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=1e-3)
    steps = st.number_input("Generator steps", 10, 5000, 600, 10)
    fake_steps = st.slider("f_psi steps per G step (k)", 1, 10, 3)
    chunk = st.slider("Steps per refresh", 1, 50, 10)

state = st.session_state
state.setdefault("toy_run", None)
state.setdefault("toy_records", [])
state.setdefault("toy_running", False)
state.setdefault("toy_finished", [])


def new_run() -> None:
    config = ToyConfig(target=target, generator=generator, loss=loss, alpha=alpha, lr=lr, steps=int(steps),
                       fake_steps=fake_steps, batch=256, fake_warmup=50, eval_every=10, eval_samples=600, hidden=64)
    run = ToyDistillation(config)
    state.toy_run, state.toy_iter, state.toy_records = run, iter(run), []
    state.toy_label = f"{loss}" + (f" alpha={alpha:g}" if loss == "sid" else "") + f" ({generator}, lr {lr:g})"


start, pause, step, reset = st.columns(4)
if start.button("Start", type="primary"):
    if state.toy_run is None:
        new_run()
    state.toy_running = True
if pause.button("Pause"):
    state.toy_running = False
advance_once = step.button("Step")
if reset.button("Reset"):
    state.toy_run, state.toy_records, state.toy_running = None, [], False


def advance(n: int) -> None:
    for _ in range(n):
        try:
            state.toy_records.append(next(state.toy_iter))
        except StopIteration:
            state.toy_running = False
            state.toy_finished.append((state.toy_label, [(r.step, r.energy) for r in state.toy_records
                                                         if r.energy is not None]))
            break


def draw() -> None:
    run = state.toy_run
    if run is None:
        st.info("Press Start (or Step) to train.")
        return
    evaluated = [r for r in state.toy_records if r.energy is not None]
    cols = st.columns(3)
    cols[0].metric("step", len(state.toy_records))
    cols[1].metric("energy distance", f"{evaluated[-1].energy:.4f}" if evaluated else "-")
    cols[2].metric("NLL under the target", f"{evaluated[-1].nll:.3f}" if evaluated else "-")
    with torch.no_grad():
        grid = torch.stack(torch.meshgrid(torch.linspace(-3.5, 3.5, 120), torch.linspace(-3.5, 3.5, 120),
                                          indexing="xy"), -1).reshape(-1, 2)
        density = run.target.log_prob(grid).exp().reshape(120, 120).numpy()
        arrows = torch.stack(torch.meshgrid(torch.linspace(-3, 3, 13), torch.linspace(-3, 3, 13), indexing="xy"),
                             -1).reshape(-1, 2)
        teacher = (run.target(arrows, 0.5) - arrows).numpy()
        fake = (run.f_psi()(arrows, 0.5) - arrows).numpy()
        samples = run.sample().numpy()[:600]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    ax1.contourf(np.linspace(-3.5, 3.5, 120), np.linspace(-3.5, 3.5, 120), density, levels=20, cmap="Blues")
    ax1.scatter(samples[:, 0], samples[:, 1], s=3, c="crimson", alpha=0.6, label="G samples")
    a = arrows.numpy()
    ax1.quiver(a[:, 0], a[:, 1], teacher[:, 0], teacher[:, 1], color="navy", alpha=0.6, label="f_phi - x")
    ax1.quiver(a[:, 0], a[:, 1], fake[:, 0], fake[:, 1], color="darkorange", alpha=0.6, label="f_psi - x")
    ax1.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), aspect="equal", title="target density, samples and fields")
    ax1.legend(loc="upper right", fontsize=8)
    for label, curve in state.toy_finished:
        ax2.semilogy(*zip(*curve), lw=1, alpha=0.7, label=label)
    if evaluated:
        ax2.semilogy([r.step for r in evaluated], [r.energy for r in evaluated], lw=2.2, color="crimson",
                     label=state.toy_label + " (current)")
    ax2.set(xlabel="generator step", ylabel="energy distance", title="distance to the target")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    show(fig)


@st.fragment(run_every=0.5 if state.toy_running else None)
def live() -> None:
    if state.toy_running:
        advance(chunk)
    draw()


if advance_once:
    if state.toy_run is None:
        new_run()
    advance(chunk)
live()
