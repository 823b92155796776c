"""Page 3: toy SiD (or a peer loss) on an exact 2-D teacher, trained live in a fragment.

Run lifecycle. The run on screen is running, paused or finished, and the page says which. Start begins a new run
when there is none, when the run on screen has finished, or when the sidebar's settings differ from its settings;
otherwise it resumes the paused run. A replaced run moves to the comparison once, labelled by its settings. While a
run is running the settings are locked, and they persist across page switches, so the sidebar always shows the
settings of the run on screen (or, after an edit, the notice that Start will use the new ones).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Iterator

import numpy as np
import streamlit as st
import torch

from apps import plots
from apps.common import setup, show
from full.errors import ConfigError
from toy.distill import TOY_LOSSES, StepRecord, ToyConfig, ToyDistillation
from toy.targets import make_target

REFRESH = 0.5          # seconds between live refreshes while running
FIELD_SIGMA = 0.5      # noise level of the drawn fields
BOX = 3.5              # half-width of the drawn square
TARGETS = ["8gaussians", "overlap2d", "gaussian2d"]
GENERATORS = ["mlp", "affine"]
LOSS_NAMES = {"sid": "SiD", "naive": "naive L1", "projected": "projected L2", "diff_instruct": "Diff-Instruct",
              "dmd": "DMD", "sida": "SiDA"}
RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
DEFAULTS = dict(target="8gaussians", generator="mlp", loss="sid", alpha=1.0, lr=1e-3, steps=600, fake_steps=3)

setup()
state = st.session_state
state.setdefault("toy_live", None)        # the run on screen (LiveRun) or None
state.setdefault("toy_compare", [])       # earlier runs: (label, steps, energies), each once
state.setdefault("toy_count", 0)          # runs begun in this session (numbers the labels)


@dataclass
class LiveRun:
    """One toy run of this session: its settings, the iterator that trains it, and what has been drawn."""
    number: int
    settings: dict
    run: ToyDistillation
    steps: Iterator[StepRecord]
    status: str = "paused"                 # "running", "paused" or "finished"
    done: int = 0                          # generator steps done
    curve: list = field(default_factory=list)  # (step, energy distance) at evaluation steps
    last: StepRecord | None = None         # last evaluated record

    @property
    def label(self) -> str:
        return f"#{self.number} " + describe(self.settings)

    def advance(self, n: int) -> None:
        for _ in range(n):
            if self.status == "finished":
                return
            record = next(self.steps)
            self.done = record.step
            if record.energy is not None:
                self.curve.append((record.step, record.energy))
                self.last = record
            if self.done >= self.settings["steps"]:
                self.status = "finished"


def describe(settings: dict) -> str:
    """A run's label: what a learner changes between runs."""
    s = settings
    text = LOSS_NAMES[s["loss"]] + (f" alpha={s['alpha']:g}" if s["loss"] == "sid" else "")
    text += f", {s['generator']} G, lr {s['lr']:g}"
    text += f", k={s['fake_steps']}" if s["generator"] == "mlp" else ", exact f_psi"
    return text + f", {s['target']}, {s['steps']} steps"


def current_settings() -> dict:
    """The sidebar's settings (from the widgets' session state, so callbacks can read them too)."""
    s = {name: state.get(f"toy_{name}", default) for name, default in DEFAULTS.items()}
    s["steps"] = int(s["steps"])
    return s


def config_of(settings: dict) -> ToyConfig:
    """The toy run the sidebar's settings describe."""
    return ToyConfig(target=settings["target"], generator=settings["generator"], loss=settings["loss"],
                     alpha=settings["alpha"], lr=settings["lr"], steps=settings["steps"],
                     fake_steps=settings["fake_steps"], batch=256, fake_warmup=50, eval_every=10, eval_samples=600,
                     hidden=64)


def refusal(settings: dict) -> str | None:
    """Why these settings cannot run (ToyConfig's own check), or None."""
    try:
        config_of(settings).validate()
    except ConfigError as error:
        return str(error)
    return None


def begin(settings: dict) -> None:
    """Start a new run; the run it replaces goes to the comparison (once) if it drew anything."""
    old = state.toy_live
    if old is not None and old.curve:
        outcome = "finished" if old.status == "finished" else f"stopped at step {old.done}"
        state.toy_compare.append((f"{old.label} ({outcome})", *zip(*old.curve)))
    run = ToyDistillation(config_of(settings))
    state.toy_count += 1
    state.toy_live = LiveRun(state.toy_count, settings, run, iter(run))


def needs_new_run(settings: dict) -> bool:
    live = state.toy_live
    return live is None or live.status == "finished" or live.settings != settings


def on_start() -> None:
    settings = current_settings()
    if needs_new_run(settings):
        begin(settings)
    state.toy_live.status = "running"


def on_pause() -> None:
    if state.toy_live is not None and state.toy_live.status == "running":
        state.toy_live.status = "paused"


def on_step() -> None:
    settings = current_settings()
    if needs_new_run(settings):
        begin(settings)
    state.toy_live.advance(int(state.get("toy_chunk", 10)))


def on_reset() -> None:
    state.toy_live = None


def on_clear() -> None:
    state.toy_compare = []


st.title("Toy distillation, live")
st.markdown(f"The teacher is the exact mixture denoiser. Arrows show the teacher field f_phi(x) - x and the fake-score "
            f"field f_psi(x) - x at sigma = {FIELD_SIGMA}; the curve is the energy distance to the target. **Start** "
            "begins a new run (or resumes a paused one with the same settings), **Pause** holds it, **Step** trains "
            "one refresh's worth of steps, **Reset** discards the run on screen. Earlier runs stay in the comparison.")

live = state.toy_live
running = live is not None and live.status == "running"
for name, default in DEFAULTS.items():  # the widgets' values live in session state (no value= arguments) ...
    state.setdefault(f"toy_{name}", default)
if running:  # ... so that a running run's settings are what the (locked) sidebar shows
    for name, value in live.settings.items():
        state[f"toy_{name}"] = value
state.setdefault("toy_chunk", 10)
with st.sidebar:
    st.header("Run settings")
    if running:
        st.caption("Locked while the run trains: Pause to change them.")
    persist = dict(persist_state="session", disabled=running)
    st.selectbox("Target", TARGETS, key="toy_target", **persist)
    st.selectbox("Generator", GENERATORS, key="toy_generator", **persist,
                 help="affine: exact fake score N(b, A A^T); mlp: an MLP fake score fitted k steps per G step")
    st.selectbox("Loss", TOY_LOSSES, key="toy_loss", format_func=lambda name: LOSS_NAMES.get(name, name), **persist)
    st.slider("alpha (SiD only)", 0.0, 2.0, step=0.1, key="toy_alpha", **persist)
    st.select_slider("Learning rate of G", RATES, key="toy_lr", **persist)
    st.number_input("Generator steps", 10, 5000, step=10, key="toy_steps", **persist)
    st.slider("f_psi steps per G step (k)", 1, 10, key="toy_fake_steps", **persist)
    st.divider()
    chunk = st.slider("Steps per refresh", 1, 50, key="toy_chunk", persist_state="session")

settings = current_settings()
refused = refusal(settings)
resumable = live is not None and live.status == "paused" and live.settings == settings
start, pause, step, reset = st.columns(4)
start.button("Resume" if resumable else "Start", key="toy_start", type="primary", on_click=on_start,
             disabled=running or refused is not None, width="stretch")
pause.button("Pause", key="toy_pause", on_click=on_pause, disabled=not running, width="stretch")
step.button("Step", key="toy_step", on_click=on_step, disabled=running or refused is not None, width="stretch")
reset.button("Reset", key="toy_reset", on_click=on_reset, disabled=live is None, width="stretch")

if refused is not None:
    st.error(f"These settings cannot run: {refused}.")
if live is not None and live.settings != settings and not running:
    changed = ", ".join(f"{k}: {live.settings[k]:g} → {settings[k]:g}" if isinstance(settings[k], float)
                        else f"{k}: {live.settings[k]} → {settings[k]}" for k in settings if settings[k] != live.settings[k])
    st.warning(f"The sidebar differs from the run on screen ({changed}). **Start** begins a new run with the "
               "sidebar's settings; the run on screen moves to the comparison.")


@st.cache_data
def target_picture(target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid, target density on it, arrow positions and the teacher field at FIELD_SIGMA (fixed per target)."""
    family = make_target(target)
    xs = torch.linspace(-BOX, BOX, 120)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    ticks = torch.linspace(-3, 3, 13)
    arrows = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = family.log_prob(grid).exp().reshape(120, 120)
        teacher = family(arrows, FIELD_SIGMA) - arrows
    return xs.numpy(), density.numpy(), arrows.numpy(), teacher.numpy()


def show_status(live: LiveRun | None) -> None:
    if live is None:
        st.info("No run yet: press **Start** (or **Step**) to train with the sidebar's settings.")
        return
    total = live.settings["steps"]
    if live.status == "running":
        st.progress(live.done / total, text=f"**Running** {live.label}: step {live.done} of {total}")
    elif live.status == "paused":
        st.progress(live.done / total, text=f"**Paused** {live.label}: step {live.done} of {total}")
    else:
        final = f", final energy distance {live.last.energy:.4f}" if live.last else ""
        st.success(f"**Finished** {live.label}: {total} steps{final}. Start begins a new run.")


def draw(live: LiveRun | None) -> None:
    if live is not None:
        cols = st.columns(3)
        cols[0].metric("step", live.done)
        cols[1].metric("energy distance", f"{live.last.energy:.4f}" if live.last else "-")
        cols[2].metric("NLL under the target", f"{live.last.nll:.3f}" if live.last else "-")
    left, right = st.columns(2)
    if live is not None:
        xs, density, arrows, teacher = target_picture(live.settings["target"])
        with torch.no_grad():
            points = torch.from_numpy(arrows)
            fake = (live.run.f_psi()(points, FIELD_SIGMA) - points).numpy()
            samples = live.run.sample().numpy()[:600]
        with left:
            show(partial(plots.toy_field, xs=xs, density=density, samples=samples, arrows=arrows, teacher=teacher,
                         fake=fake, sigma=FIELD_SIGMA, title=f"{live.settings['target']}: density, samples, fields"),
                 figsize=(6, 6.6))
    current = None
    if live is not None and live.curve:
        steps, energies = zip(*live.curve)
        current = (f"{live.label} ({live.status}, on screen)", steps, energies)
    if current or state.toy_compare:
        with right:
            show(partial(plots.toy_curves, current=current, compared=state.toy_compare),
                 figsize=(6, 4.4 + 0.22 * (len(state.toy_compare) + 1)))


@st.fragment(run_every=REFRESH if running else None)
def live_view() -> None:
    live = state.toy_live
    if live is not None and live.status == "running":
        live.advance(chunk)
        if live.status == "finished":
            st.rerun()  # a full rerun stops the refresh timer and unlocks the sidebar
    show_status(live)
    draw(live)


live_view()
if state.toy_compare:
    st.button("Clear the comparison", key="toy_clear", on_click=on_clear)
