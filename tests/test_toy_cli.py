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


@pytest.mark.parametrize("args, message", [(["distill", "--loss", "l3", "--steps", "1"], "unknown loss"),
                                            (["prop4", "--sigma", "0"], "--sigma 0.0: must be a finite number > 0")])
def test_bad_input_is_one_line(args, message):
    out = toy(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert message in out.stderr.strip().splitlines()[-1]
