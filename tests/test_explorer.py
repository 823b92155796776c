"""The explorer's pages under streamlit's AppTest: the numbers respond to the widgets, the toy page's run lifecycle
behaves as a learner expects, the runs page reads typed run directories (synthetic ones written here through
`Tick.to_json`), the alpha-study page renders its schema, and every page's figures render from two threads at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from apps import common, plots
from full.method.records import Tick
from toy.proofs import prop4_gradients

APPS = Path(__file__).resolve().parents[1] / "apps"
PAGES = APPS / "explorer_pages"
TIMEOUT = 180


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / name), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def latex(at: AppTest) -> list[str]:
    return [element.value for element in at.latex]


# --------------------------------------------------------------------------- figures under concurrent sessions

def every_figure() -> list[tuple]:
    """One (draw, figsize) per figure kind of the pages, on data shaped like the pages' own."""
    rng = np.random.default_rng(0)
    xs = np.linspace(-3.5, 3.5, 40)
    arrows = rng.normal(size=(49, 2))
    curve = (np.arange(10, 310, 10), np.exp(-np.arange(10, 310, 10) / 80) + 0.01)
    ticks = [Tick(tick=i, kimg=1.6 * i, iteration=50 * i, seconds=10.0 * i, sec_per_iter=0.2, sec_per_kimg=6.0,
                  peak_mem_gib=0.4, fake={"loss": 1 / i, "denoise": 0.9 / i, "discriminator": 0.7, "bce_real": 0.6,
                                          "bce_fake": 0.8, "accuracy_real": 0.5, "accuracy_fake": 0.6},
                  generator={"loss": -0.1 * i, "L1": 0.2 / i, "L2": 0.3 / i, "sid": -0.05 * i, "gan": 0.7},
                  metrics={"fid": 150.0 / i}) for i in range(1, 8)]
    alphas = [0.5, 1.0, 1.2]
    results = [{"value": v, "alpha": a, "steps_to_threshold": [100 * (1 + a), None], "final": [0.01 * a, 0.02]}
               for v in (2, 8) for a in alphas]
    return [
        (partial(plots.toy_field, xs=xs, density=np.outer(np.exp(-xs ** 2), np.exp(-xs ** 2)),
                 samples=rng.normal(size=(300, 2)), arrows=arrows, teacher=-arrows, fake=-0.5 * arrows, sigma=0.5,
                 title="field"), (6, 6.6)),
        (partial(plots.toy_curves, current=("#2 SiD", *curve), compared=[("#1 DMD", curve[0], curve[1] * 2)]), (6, 4.6)),
        (partial(plots.run_losses, kimg=np.array([t.kimg for t in ticks]), panels=plots.loss_panels(ticks), alpha=1.2),
         (13, 6.6)),
        (partial(plots.fid_curves, runs=[("sid", [1, 2, 3], [158.0, 90.0, 60.0]), ("sida", [1, 2, 3], [120, 70, 40])],
                 reference=[("teacher", 61.9)]), (9, 4.2)),
        (partial(plots.family_curves, x=xs, levels=[0.05, 0.5], sigma=0.5,
                 curves={s: (np.exp(-xs ** 2), xs / 2, -xs) for s in (0.05, 0.5)}), (13, 3.8)),
        (partial(plots.prop4_panels, thetas=xs, gradients={k: xs * i for i, k in enumerate(plots.PROP4_STYLE)},
                 taus=xs + 4, flows={k: np.exp(-xs * i) for i, k in enumerate(plots.PROP4_STYLE)},
                 labels={k: k for k in plots.PROP4_STYLE}, sigma=1.0, alpha=1.2, theta0=1.0), (12, 4)),
        (partial(plots.two_timescale_panels, taus=xs + 4, paths={a: rng.normal(size=(40, 2)) for a in alphas},
                 quasi_steady={a: np.exp(-xs) for a in alphas}, start=(1.0, 0.0)), (12, 4.6)),
        (partial(plots.eigenvalue_panels, alphas=xs, eigenvalues=rng.normal(size=(40, 2)) + 1j, alpha=1.2,
                 etas=np.array([0.5, 2.0]), critical_rates=xs / 4), (12, 4)),
        (partial(plots.alpha_study, results=results, axis="dimension", metric="energy distance",
                 thresholds={2: 0.01, 8: 0.02}), (12, 4.2)),
    ]


def test_every_figure_renders_from_two_threads_at_once(monkeypatch):
    """Two sessions drawing at once. matplotlib's text layout (the shared mathtext parser, the font cache) is
    process-global: matplotlib serialises `Figure.draw`, but layout done outside a draw (`fig.tight_layout()`, as the
    pages did) ran concurrently with another session's draw and replaced plots with mathtext ParseExceptions such as
    \\mathdefault{10^{-1}}. So every page builds, lays out and renders its figures inside `apps.common.render_png`,
    under one process-wide lock. A probe marks each figure's life, from `Figure()` to the end of `savefig`
    (widened by a short sleep, so that two unlocked sessions interleave for certain): no two threads may be inside
    at once, and no render may fail."""
    from matplotlib.figure import Figure

    alive, overlaps, guard = {}, [0], threading.Lock()  # thread -> figures being built or rendered

    def enter() -> None:
        me = threading.get_ident()
        with guard:
            overlaps[0] += any(n for thread, n in alive.items() if thread != me)
            alive[me] = alive.get(me, 0) + 1
        threading.Event().wait(0.005)

    def leave() -> None:
        with guard:
            alive[threading.get_ident()] -= 1

    init, savefig = Figure.__init__, Figure.savefig

    def probed_init(self, *args, **kwargs):
        enter()
        init(self, *args, **kwargs)

    def probed_savefig(self, *args, **kwargs):
        try:
            enter()
            leave()
            return savefig(self, *args, **kwargs)
        finally:
            leave()

    monkeypatch.setattr(Figure, "__init__", probed_init)
    monkeypatch.setattr(Figure, "savefig", probed_savefig)
    figures = every_figure()
    errors, barrier = [], threading.Barrier(2)

    def session(order: list) -> None:
        barrier.wait()
        for draw, figsize in order:
            try:
                png = common.render_png(draw, figsize, dpi=40)
                assert png.startswith(b"\x89PNG")
            except Exception as error:  # noqa: BLE001 (collect every failure of both threads)
                errors.append(repr(error)[:300])

    threads = [threading.Thread(target=session, args=(order,)) for order in (figures[::2], figures[1::2][::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"{len(errors)} of {len(figures)} renders failed: {sorted(set(errors))[:3]}"
    assert overlaps[0] == 0, f"two sessions built or rendered figures at the same time {overlaps[0]} times"


def test_pages_draw_only_through_the_locked_renderer():
    """No page bypasses the lock: none imports pyplot or calls st.pyplot."""
    for path in [*PAGES.glob("*.py"), APPS / "plots.py"]:
        text = path.read_text()
        assert "import matplotlib.pyplot" not in text and "st.pyplot(" not in text and "plt." not in text, path.name


# --------------------------------------------------------------------------- identities

def test_identities_page_shows_each_claim_derived_and_its_difference_zero():
    at = page("identities.py")
    shown = latex(at)
    assert sum(r"\text{left} - \text{right} = 0" in t for t in shown) == 3
    # the sides as derived differ in form: Tweedie's right side still carries the score inside the formula
    assert any(r"\frac{\sigma^{2} \left(a \mu - x_{t}\right)}{a^{2} s^{2} + \sigma^{2}} + x_{t}" in t for t in shown)
    assert any(r"\begin{aligned}" in t for t in shown)  # long sums wrap
    symbols = " ".join(m.value for m in at.markdown)
    for symbol in ("$a$", "$s$", "$c_{k}$", "$k_{0}, k_{1}$", r"$\sigma$", r"$\mu$"):
        assert symbol in symbols, symbol
    # the two score-projection rows estimate different things
    assert any(r"\log p(x_t)\big]" in t and "u(x_t)" in t for t in shown)
    assert any(r"-\frac{x_t - a x_0}{\sigma^2}" in t for t in shown)
    # the chosen family's formula, not a Gaussian's, sits next to the mixture's numbers
    assert any(r"0.6\,\mathcal N(x_0;\,-1,\,0.3) + 0.4\,\mathcal N(x_0;\,1.5,\,0.5)" in t for t in shown)
    before = [m.value for m in at.metric if m.label == "Monte Carlo estimate"]
    at.selectbox[0].set_value("gaussian1d")
    at.slider[0].set_value(2.0).run()
    assert not at.exception
    assert any(r"p(x_0) = \mathcal N(x_0;\,0,\,1)" in t and "0.6" not in t for t in latex(at))
    after = [m.value for m in at.metric if m.label == "Monte Carlo estimate"]
    assert len(before) == 4 and before != after
    verdicts = [m.value for m in at.markdown if "standard error" in m.value]
    assert len(verdicts) == 4 and all("within 4 standard errors ✓" in v for v in verdicts)


# --------------------------------------------------------------------------- failure case

def test_identities_are_laid_out_once_per_server(monkeypatch):
    """Expanding, collecting and factoring the derived sides depends on no widget: a second visit lays out none."""
    from apps import common
    laid_out = []
    latex = common.latex
    monkeypatch.setattr(common, "latex", lambda expr, **kw: laid_out.append(kw) or latex(expr, **kw))
    st.cache_data.clear()   # as on a fresh server
    first = page("identities.py")
    count = len(laid_out)
    second = page("identities.py")
    assert count > 0 and len(laid_out) == count
    assert [x.body for x in second.latex] == [x.body for x in first.latex]


def test_failure_case_page_gradients_rates_and_the_lagging_system():
    at = page("failure_case.py")
    sliders = {s.label: s for s in at.slider}
    spread, alpha = sliders["s (the generator's spread; 1 = Proposition 4)"], sliders["alpha (SiD)"]
    lagging = {}
    for theta, sigma, a, s in [(-2.0, 1.0, 0.4, 0.7), (2.5, 0.1, 0.4, 1.0), (2.5, 0.1, 1.8, 1.0), (-2.0, 1.0, 1.8, 0.7)]:
        sliders["theta (generator mean)"].set_value(theta)
        sliders["sigma (noise level)"].set_value(sigma)
        alpha.set_value(a)
        spread.set_value(s).run()
        assert not at.exception, [e.value for e in at.exception]
        shown = metrics(at)
        expected = prop4_gradients(theta, sigma, a)
        assert float(shown["naive L1: d/dtheta"]) == 0.0
        assert float(shown["SiD L2 - alpha L1: d/dtheta"]) == pytest.approx(expected["sid"], abs=1e-4)
        assert float(shown["true gradient: d/dtheta"]) == pytest.approx(expected["true"], abs=1e-4)
        lagging[a, s] = (shown["eigenvalues of A"], shown["critical rate eta_c"])
        if sigma == 0.1:
            flows = at.table[0].value["gradient flow at this sigma"].tolist()
            assert any("exp(-9.8e-05 tau)" in f for f in flows), flows  # sigma^4/(1+sigma^2)^2, not 0.000
    assert lagging[0.4, 1.0] == lagging[1.8, 1.0]    # Proposition 4's setting: alpha drops out even with lag
    assert lagging[0.4, 0.7] != lagging[1.8, 0.7]    # a generator that cannot match the data's spread: it does not
    assert any(r"A\big|_{s=1}" in t for t in latex(at))


# --------------------------------------------------------------------------- toy distillation lifecycle

def toy_page(steps: int = 20) -> AppTest:
    at = page("toy_distillation.py")
    at.sidebar.selectbox(key="toy_target").set_value("gaussian2d").run()
    at.sidebar.selectbox(key="toy_generator").set_value("affine").run()
    at.sidebar.number_input(key="toy_steps").set_value(steps).run()
    return at


def live(at: AppTest):
    return at.session_state["toy_live"]


def status_text(at: AppTest) -> str:
    texts = [p.proto.text for p in at.get("progress")] + [s.value for s in at.success] + [i.value for i in at.info]
    return " ".join(texts)


def test_toy_run_finishes_stops_says_so_and_start_begins_a_new_run():
    at = toy_page()
    at.button(key="toy_start").click().run()
    assert live(at).status == "running" and "Running" in status_text(at)
    assert at.button(key="toy_pause").disabled is False and at.sidebar.selectbox(key="toy_loss").disabled
    at.run()  # the fragment's next refresh
    assert not at.exception
    assert live(at).status == "finished" and live(at).done == 20
    assert "Finished" in status_text(at) and "final energy distance" in status_text(at)
    assert at.button(key="toy_pause").disabled and not at.sidebar.selectbox(key="toy_loss").disabled
    at.run()
    assert live(at).done == 20 and at.session_state["toy_compare"] == []  # nothing re-runs or is drawn twice
    at.sidebar.selectbox(key="toy_loss").set_value("dmd").run()
    assert any("sidebar differs" in w.value for w in at.warning)
    at.button(key="toy_start").click().run()
    assert not at.exception
    assert live(at).settings["loss"] == "dmd" and live(at).number == 2 and live(at).status == "running"
    labels = [label for label, *_ in at.session_state["toy_compare"]]
    assert len(labels) == 1 and labels[0].startswith("#1 SiD alpha=1") and labels[0].endswith("(finished)")
    at.run()
    at.button(key="toy_start").click().run()  # finished again, same settings: a third run, each run listed once
    labels = [label for label, *_ in at.session_state["toy_compare"]]
    assert [label.split()[0] for label in labels] == ["#1", "#2"] and live(at).number == 3
    assert "DMD" in labels[1]


def test_toy_sida_runs_with_a_fitted_fake_score_and_is_refused_in_one_line_with_an_exact_one():
    at = toy_page()
    at.sidebar.selectbox(key="toy_loss").set_value("sida").run()
    assert not at.exception and at.button(key="toy_start").disabled and at.button(key="toy_step").disabled
    (error,) = at.error
    assert "cannot run" in error.value and "--generator mlp" in error.value
    at.sidebar.selectbox(key="toy_generator").set_value("mlp").run()
    assert not at.error and not at.button(key="toy_start").disabled
    at.button(key="toy_step").click().run()
    assert not at.exception and live(at).label.startswith("#1 SiDA, mlp G")


def test_toy_pause_resume_and_paused_runs_join_the_comparison():
    at = toy_page(steps=60)
    at.button(key="toy_start").click().run()
    at.button(key="toy_pause").click().run()
    assert live(at).status == "paused" and "Paused" in status_text(at)
    done = live(at).done
    assert at.button(key="toy_start").label == "Resume"
    at.button(key="toy_start").click().run()
    assert live(at).number == 1 and live(at).done > done and live(at).status == "running"
    at.button(key="toy_pause").click().run()
    at.sidebar.slider(key="toy_alpha").set_value(0.5).run()
    assert at.button(key="toy_start").label == "Start"
    at.button(key="toy_start").click().run()
    (label, steps, energies), = at.session_state["toy_compare"]
    assert label.startswith("#1 SiD alpha=1") and f"stopped at step {steps[-1]}" in label and len(energies) == len(steps)
    assert live(at).settings["alpha"] == 0.5


def test_toy_step_reset_and_the_sidebar_keeps_the_runs_settings_across_pages():
    at = AppTest.from_file(str(APPS / "explorer.py"), default_timeout=TIMEOUT).run()
    at.switch_page("explorer_pages/toy_distillation.py").run()
    at.sidebar.selectbox(key="toy_target").set_value("gaussian2d").run()
    at.sidebar.selectbox(key="toy_generator").set_value("affine").run()
    at.sidebar.selectbox(key="toy_loss").set_value("dmd").run()
    at.sidebar.number_input(key="toy_steps").set_value(20).run()
    at.button(key="toy_step").click().run()
    assert int(metrics(at)["step"]) == 10 and metrics(at)["energy distance"] != "-"
    assert live(at).status == "paused" and live(at).settings["loss"] == "dmd"
    at.switch_page("explorer_pages/choosing_alpha.py").run()
    at.switch_page("explorer_pages/toy_distillation.py").run()
    assert not at.exception
    assert at.sidebar.selectbox(key="toy_loss").value == "dmd" == live(at).settings["loss"]
    assert at.sidebar.number_input(key="toy_steps").value == 20
    assert not any("sidebar differs" in w.value for w in at.warning)
    at.button(key="toy_step").click().run()
    assert int(metrics(at)["step"]) == 20 and live(at).status == "finished"
    at.button(key="toy_reset").click().run()
    assert "step" not in metrics(at) and live(at) is None


# --------------------------------------------------------------------------- runs

def write_run(folder: Path, objective: str = "sid", ticks: int = 3, fid: bool = True) -> Path:
    """A synthetic run directory in the trainer's format: config.json, typed log.jsonl, grids."""
    from full.eval.images import grid, save_png
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"preset": "test", "objective": objective, "alpha": 1.2}))
    lines = []
    for i in range(1, ticks + 1):
        fake = {"loss": 1.0 / i}
        generator = {"loss": 0.3 / i - 1.2 * 0.1 / i, "L1": 0.1 / i, "L2": 0.3 / i}
        if objective == "sida":
            fake.update(denoise=0.9 / i, discriminator=0.7, bce_real=0.6, bce_fake=0.8, accuracy_real=0.55,
                        accuracy_fake=0.6)
            generator.update(sid=generator["loss"], gan=0.69)
        lines.append(Tick(tick=i, kimg=3.2 * i, iteration=100 * i, seconds=60.0 * i, sec_per_iter=0.6,
                          sec_per_kimg=18.75, peak_mem_gib=0.5, fake=fake, generator=generator,
                          metrics={"fid": 300.0 / i} if fid else {}).to_json())
    (folder / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for kimg in (0.0, 9.6):
        save_png(grid(np.full((4, 8, 8, 1), 40 + int(kimg), np.uint8)), folder / f"grid-{kimg:010.3f}.png")
    return folder


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("SID_EXPLORER_RUNS", str(root))
    return root


def test_runs_page_lists_runs_and_plots_every_logged_term(runs_root):
    write_run(runs_root / "b-sida", "sida")
    write_run(runs_root / "a-sid", "sid")
    at = page("runs.py")
    labels = at.selectbox(key="runs_run").options
    assert f"{runs_root}/a-sid" in labels and f"{runs_root}/b-sida" in labels
    at.selectbox(key="runs_run").set_value(f"{runs_root}/a-sid").run()
    shown = metrics(at)
    assert shown["kimg"] == "9.6" and shown["latest FID"] == "100.00" and shown["sec/iter"] == "0.60"
    grids = at.select_slider(key=f"runs_grid_{runs_root / 'a-sid'}")
    assert grids.options == ["0 kimg", "9.6 kimg"] and grids.value == 9.6
    assert set(at.multiselect(key="runs_fid").value) >= {f"{runs_root}/a-sid", f"{runs_root}/b-sida"}


def test_loss_panels_separate_the_terms():
    ticks = [Tick(tick=1, kimg=1.0, iteration=1, seconds=1.0, sec_per_iter=1.0, sec_per_kimg=1.0, peak_mem_gib=0.1,
                  fake={"loss": 1.0}, generator={"loss": -0.1, "L1": 0.2, "L2": 0.14})]
    sid = {title: [label for label, _ in lines] for title, _, lines in plots.loss_panels(ticks)}
    assert sid == {"f_psi: denoising loss": ["f_psi loss"],
                   "G: L1 and L2": ["L1 = |f_phi - f_psi|^2", "L2 = (f_phi - f_psi)^T (f_phi - x_g)"],
                   "G: the SiD combination": ["L2 - alpha L1 (G loss)"]}
    ticks[0].fake.update(discriminator=0.7, accuracy_real=0.5)
    ticks[0].generator.update(sid=-0.1, gan=0.7)
    sida = {title: [label for label, _ in lines] for title, _, lines in plots.loss_panels(ticks)}
    assert sida["G: the SiD combination"] == ["L2 - alpha L1", "G loss"] and sida["G: GAN term (SiDA)"] == ["GAN term"]
    assert "f_psi: discriminator (SiDA)" in sida and "discriminator accuracy (SiDA)" in sida


def test_runs_page_explains_an_unreadable_log(runs_root):
    folder = runs_root / "old"
    folder.mkdir()
    (folder / "log.jsonl").write_text('{"kimg": 1, "loss_G": 0.1}\n{"kimg": 2, "loss_G": 0.1}\n')
    at = page("runs.py")
    at.selectbox(key="runs_run").set_value(next(o for o in at.selectbox(key="runs_run").options
                                                if o.endswith("/old"))).run()
    assert any("not a tick record" in w.value for w in at.warning)


def test_runs_page_follows_a_distillation_and_shows_it_when_done(runs_root, tmp_path):
    outdir, go = runs_root / "explorer-test", tmp_path / "go"
    script = f"""
import json, os, pathlib, time, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from full.method.records import Progress
out = pathlib.Path({str(outdir)!r}); out.mkdir(parents=True)
(out / "progress.tmp").write_text(json.dumps(Progress(40, 100, 1.28, 12.0).to_json()))
os.replace(out / "progress.tmp", out / "progress.json")
while not pathlib.Path({str(go)!r}).exists():
    time.sleep(0.05)
"""
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        at = page("runs.py")
        at.session_state["runs_job"] = types.SimpleNamespace(process=process, outdir=outdir, stderr=tmp_path / "err")
        for _ in range(100):
            if (outdir / "progress.json").exists():
                break
            threading.Event().wait(0.1)
        at.run()
        bars = [p.proto.text for p in at.get("progress")]
        assert any("iteration 40/100" in text for text in bars), bars
        written = write_run(tmp_path / "written")  # the trainer's files appear ...
        for file in written.iterdir():
            file.rename(outdir / file.name)
        go.touch()
        process.wait(timeout=30)
        at.run()  # ... the fragment sees the process end and reruns the page with the new run selected
        assert not at.exception
        assert at.selectbox(key="runs_run").value == f"{runs_root}/explorer-test"
        assert any(str(outdir) in s.value for s in at.success)
        assert metrics(at)["kimg"] == "9.6"
    finally:
        process.kill()


def test_runs_page_keeps_the_generated_images_and_shows_the_speed_up():
    at = page("runs.py")
    at.slider(key="runs_n").set_value(8).run()
    at.slider(key="runs_teacher_steps").set_value(2).run()
    at.button(key="runs_generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = metrics(at)
    one, teacher = float(shown["SiD²A one step"].split()[0]), float(shown["Teacher, 3 NFE"].split()[0])
    assert float(shown["speed-up of one step"].rstrip("x")) == pytest.approx(teacher / one, rel=0.06)
    at.slider(key="runs_n").set_value(16).run()  # another control: the images stay, with a note
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    timed = [c for c in captions if c.endswith(" ms/image")]
    assert [c.split(":")[0] for c in timed] == ["SiD²A one step", "teacher, 3 NFE"]
    assert any("press Generate" in c.value for c in at.caption)


@pytest.mark.parametrize("example", sorted(p.parent.name for p in (APPS.parent / "assets" / "runs").glob("*/log.jsonl"))
                         or [pytest.param(None, marks=pytest.mark.skip(reason="no example runs shipped yet"))])
def test_shipped_example_runs_show_at_once(example):
    at = page("runs.py")
    assert f"assets/runs/{example}" in at.selectbox(key="runs_run").options
    at.selectbox(key="runs_run").set_value(f"assets/runs/{example}").run()
    assert not at.exception and metrics(at)["kimg"] != "-"
    assert f"assets/runs/{example}" in at.multiselect(key="runs_fid").value


# --------------------------------------------------------------------------- choosing alpha

STUDY = {"alphas": [0.5, 1.0, 1.2], "seeds": [0, 1], "metric": "energy distance", "threshold": 0.05,
         "summary": "**Smaller alpha** converges first when the fake score lags.",
         "studies": {"dimension": {"axis": "dimension", "values": [2, 8], "results": [
             {"value": d, "alpha": a, "steps_to_threshold": [int(100 * a * d), None if a > 1 else 90],
              "final": [0.01 * a, 0.02 * a]} for d in (2, 8) for a in (0.5, 1.0, 1.2)]},
             "teacher": {"axis": "teacher", "values": ["exact", "fitted"], "results": [
                 {"value": t, "alpha": a, "steps_to_threshold": [None, None], "final": [0.1, 0.2]}
                 for t in ("exact", "fitted") for a in (0.5, 1.0, 1.2)]}}}


def test_choosing_alpha_page_renders_the_study(tmp_path, monkeypatch):
    path = tmp_path / "alpha_study.json"
    path.write_text(json.dumps(STUDY))
    monkeypatch.setenv("SID_ALPHA_STUDY", str(path))
    at = page("choosing_alpha.py")
    assert [h.value for h in at.header] == ["The data's dimension", "An exact or a fitted teacher"]
    assert any("**Smaller alpha**" in m.value for m in at.markdown)
    assert len(at.get("image")) == 2
    table = at.dataframe[0].value
    assert table["reached"].tolist() == ["2/2", "2/2", "1/2"] * 2
    assert table["steps to threshold (mean, min-max)"].tolist()[:3] == ["95 (90-100)", "145 (90-200)", "240 (240-240)"]
    assert at.dataframe[1].value["steps to threshold (mean, min-max)"].tolist() == ["never"] * 6


def test_choosing_alpha_figures_are_rendered_once_per_version_of_the_study(tmp_path, monkeypatch):
    from apps import plots
    drawn = []
    draw = plots.alpha_study
    monkeypatch.setattr(plots, "alpha_study", lambda fig, **kw: drawn.append(kw["axis"]) or draw(fig, **kw))
    path = tmp_path / "alpha_study.json"
    path.write_text(json.dumps(STUDY))
    monkeypatch.setenv("SID_ALPHA_STUDY", str(path))
    page("choosing_alpha.py")
    at = page("choosing_alpha.py")   # another visit (or session): the same pictures, not drawn again
    assert drawn == ["dimension", "teacher"] and len(at.get("image")) == 2
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))   # the study is re-run
    page("choosing_alpha.py")
    assert drawn == ["dimension", "teacher"] * 2


def test_choosing_alpha_page_reads_per_setting_thresholds_and_diverged_runs(tmp_path, monkeypatch):
    """The study may describe its threshold in words and give one per setting (studies.*.thresholds), with budgets
    (studies.*.steps) and null final distances for runs that diverged."""
    study = json.loads(json.dumps(STUDY))
    study["threshold"] = "per setting: 1.5 x the floor (studies.*.thresholds)"
    study["metric"] = "energy distance (V-statistic) between 2000 generator samples and as many target samples"
    for block in study["studies"].values():
        block["thresholds"] = [0.011 * (i + 1) for i in range(len(block["values"]))]
        block["steps"] = [1500] * len(block["values"])
    study["studies"]["teacher"]["results"][0]["final"] = [None, 0.2]
    path = tmp_path / "alpha_study.json"
    path.write_text(json.dumps(study))
    monkeypatch.setenv("SID_ALPHA_STUDY", str(path))
    at = page("choosing_alpha.py")
    assert any("per setting: 1.5 x the floor" in m.value for m in at.markdown)
    assert at.dataframe[0].value["threshold"].tolist() == ["0.011"] * 3 + ["0.022"] * 3
    teacher = at.dataframe[1].value
    assert teacher["steps to threshold (mean, min-max)"].tolist() == ["never in 1500 steps"] * 6
    assert teacher["final (mean ± std)"].tolist()[0] == "0.2 ± 0 (1 diverged)"


def test_choosing_alpha_page_says_when_the_study_is_missing_or_malformed(tmp_path, monkeypatch):
    monkeypatch.setenv("SID_ALPHA_STUDY", str(tmp_path / "absent.json"))
    at = page("choosing_alpha.py")
    assert any("has not been run" in w.value for w in at.warning)
    (tmp_path / "bad.json").write_text(json.dumps({"alphas": [1.0], "studies": {"x": {"axis": "a"}}}))
    monkeypatch.setenv("SID_ALPHA_STUDY", str(tmp_path / "bad.json"))
    at = page("choosing_alpha.py")
    assert any("does not follow" in e.value and "threshold" in e.value for e in at.error)


def test_entry_point_navigates_to_the_five_pages():
    at = AppTest.from_file(str(APPS / "explorer.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["SiD's score identities"]  # the default page
    assert not (APPS / "pages").exists()  # Streamlit would list such a folder beside the navigation
    at.switch_page("explorer_pages/choosing_alpha.py").run()
    assert not at.exception and [t.value for t in at.title] == ["How to choose alpha"]
