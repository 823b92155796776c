"""`python -m toy` end to end: verify's table and exit code, prop4's JSON, distill's records, bad input."""
import json
import subprocess
import sys

import pytest

from toy.proofs import prop4_gradients


def toy(*args):
    return subprocess.run([sys.executable, "-m", "toy", *args], capture_output=True, text=True, timeout=300)


def test_verify_passes_and_reports_every_check():
    out = toy("verify", "--json", "--samples", "20000")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads(out.stdout)
    names = " ".join(r["name"] for r in rows)
    for expected in ("tweedie", "score_projection", "projected_score_matching", "prop4 grad naive", "prop4 grad true",
                     "prop4 flow naive"):
        assert expected in names
    assert all(r["passed"] for r in rows)
    learns = {r["name"].split(":")[0]: r["symbolic"] for r in rows if r["name"].startswith("prop4 flow")}
    assert learns == {"prop4 flow naive": "cannot learn", "prop4 flow projected": "learns",
                      "prop4 flow sid": "learns", "prop4 flow true": "learns"}


@pytest.mark.parametrize("theta, sigma, alpha", [(1.0, 1.0, 1.2), (-0.7, 0.4, 0.5)])
def test_prop4_json(theta, sigma, alpha):
    out = toy("prop4", "--theta", str(theta), "--sigma", str(sigma), "--alpha", str(alpha), "--json",
              "--samples", "5000")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"naive", "projected", "sid", "true"}
    closed = prop4_gradients(theta, sigma, alpha)
    for name, entry in result.items():
        assert set(entry) == {"closed_form", "monte_carlo", "stderr"}
        assert entry["closed_form"] == pytest.approx(closed[name])
        assert abs(entry["monte_carlo"] - entry["closed_form"]) <= 4 * entry["stderr"] + 1e-9
    assert result["naive"]["closed_form"] == 0 and result["true"]["closed_form"] == pytest.approx(
        2 * result["sid"]["closed_form"])


def test_distill_writes_records(tmp_path):
    out_file = tmp_path / "run.jsonl"
    out = toy("distill", "--target", "gaussian2d", "--generator", "affine", "--loss", "sid", "--alpha", "1.0",
              "--steps", "30", "--eval-every", "10", "--eval-samples", "200", "--lr", "0.01", "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert records[-1]["kl"] < records[9]["kl"]
    assert "final:" in out.stdout


def test_alpha_writes_the_study(tmp_path):
    out = toy("alpha", "--quick", "--steps", "6", "--alphas", "0.5", "1.5", "--seeds", "0", "--json",
              "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert json.loads((tmp_path / "alpha_study.json").read_text()) == doc
    assert (tmp_path / "alpha_study.png").stat().st_size > 10_000
    assert doc["alphas"] == [0.5, 1.5] and doc["seeds"] == [0]
    assert set(doc["studies"]) == {"dimension", "teacher", "fake_steps"}
    for study in doc["studies"].values():
        assert len(study["results"]) == 2 * len(study["values"])
        assert all(len(r["final"]) == len(r["steps_to_threshold"]) == 1 for r in study["results"])


def test_alpha_dry_run_help_and_bad_options(capsys):
    from toy.__main__ import main
    assert main(["alpha", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "150 (setting, alpha, seed) cells, 120 distinct runs" in out and "fake_steps=1: target=gmm64d" in out
    with pytest.raises(SystemExit) as exit_help:
        main(["alpha", "--help"])
    assert exit_help.value.code == 0 and "energy distance" in capsys.readouterr().out
    for args, message in ((["--workers", "0"], "argument --workers: 0 is not allowed; it must be a number >= 1"),
                          (["--alphas", "inf"], "argument --alphas: inf is not allowed; it must be a finite number")):
        with pytest.raises(SystemExit) as exit_bad:
            main(["alpha", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_bad.value.code == 2 and len(err) == 1 and message in err[0]


@pytest.mark.parametrize("args, message", [(["distill", "--loss", "l3", "--steps", "1"], "unknown loss"),
                                            (["prop4", "--sigma", "0"], "argument --sigma: 0 is not allowed; it must be a number > 0")])
def test_bad_input_is_one_line(args, message):
    out = toy(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert message in out.stderr.strip().splitlines()[-1]
