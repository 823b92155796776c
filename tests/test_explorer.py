"""The explorer's pages run under streamlit's AppTest, and their numbers respond to the widgets."""
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from toy.proofs import prop4_gradients

PAGES = Path(__file__).resolve().parents[1] / "apps" / "explorer_pages"
TIMEOUT = 180


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / name), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def test_identities_page_estimates_follow_sigma():
    at = page("identities.py")
    assert len(at.latex) >= 4
    before = [m.value for m in at.metric if m.label == "Monte Carlo estimate"]
    at.slider[0].set_value(2.0).run()
    assert not at.exception
    after = [m.value for m in at.metric if m.label == "Monte Carlo estimate"]
    assert len(before) == 4 and before != after
    verdicts = [m.value for m in at.markdown if "standard error" in m.value]
    assert len(verdicts) == 4 and all("✅" in v for v in verdicts)


def test_failure_case_page_shows_zero_naive_gradient_for_every_theta():
    at = page("failure_case.py")
    for theta in (-2.0, 0.5, 2.5):
        at.slider[0].set_value(theta).run()
        assert not at.exception
        shown = metrics(at)
        expected = prop4_gradients(theta, 1.0, 1.2)
        assert float(shown["naive L1: d/dtheta"]) == 0.0
        assert float(shown["SiD L2 - alpha L1: d/dtheta"]) == pytest.approx(expected["sid"], abs=1e-4)
        assert float(shown["true gradient: d/dtheta"]) == pytest.approx(expected["true"], abs=1e-4)


def test_toy_page_trains_on_step():
    at = page("toy_distillation.py")
    at.sidebar.number_input[0].set_value(20)
    at.button[2].click().run()  # Step
    assert not at.exception
    shown = metrics(at)
    assert int(shown["step"]) == 10 and shown["energy distance"] != "-"
    at.button[2].click().run()
    assert int(metrics(at)["step"]) == 20
    at.button[3].click().run()  # Reset
    assert "step" not in metrics(at)


def test_runs_page_reads_a_run_directory(tmp_path):
    from full.eval.images import grid, save_png
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"preset": "test"}))
    lines = [{"kimg": k, "loss_fake": 1.0 / k, "loss_G": 0.1, "sec_per_kimg": 40.0, "peak_mem_gib": 0.5,
              "iteration": 10 * k, "fid": 100.0 / k} for k in (1, 2, 3)]
    (run / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    for k in (1, 2):
        save_png(grid(np.full((4, 8, 8, 1), 40 * k, np.uint8)), run / f"grid-00000{k}.000.png")
    at = page("runs.py")
    at.text_input[0].set_value(str(run)).run()
    assert not at.exception
    shown = metrics(at)
    assert shown["kimg"] == "3.0" and shown["latest FID"] == "33.33"
    assert at.slider[0].value == 1  # the grid slider starts at the newest grid


def test_runs_page_shows_the_shipped_generator_next_to_the_teacher():
    at = page("runs.py")
    sliders = {s.label: s for s in at.slider}
    sliders["Images (the same seeds for both)"].set_value(8)
    sliders["Teacher Heun steps (NFE = 2N - 1)"].set_value(2)
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    timed = [c for c in captions if c.endswith(" ms/image")]
    assert [c.split(":")[0] for c in timed] == ["SiD one step", "teacher, 3 NFE"]
    assert all(float(c.split(": ")[1].split()[0]) > 0 for c in timed)


def test_entry_point_navigates_to_the_four_pages():
    at = AppTest.from_file(str(PAGES.parent / "explorer.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["SiD's score identities"]  # the default page
    assert not (PAGES.parent / "pages").exists()  # Streamlit would list such a folder beside the navigation
