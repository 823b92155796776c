"""The benchmarks run end to end at small sizes, and what they report has the properties that make them useful."""
import json

import pytest

from full import bench as full_bench
from toy.bench import bench as toy_bench


def test_toy_bench_reports_steps_to_threshold_and_the_naive_failure():
    results = toy_bench(["gaussian"], seeds=[0], steps=400)["gaussian"]["methods"]
    assert set(results) == {"SiD alpha=0.5", "SiD alpha=1.0", "SiD alpha=1.2", "L1 (naive)", "L2 (projected)",
                            "Diff-Instruct", "DMD"}
    assert results["L1 (naive)"]["steps_to_threshold"] == [None]  # Proposition 4: the naive loss does not learn
    for label in ("SiD alpha=1.0", "L2 (projected)"):
        (reached,) = results[label]["steps_to_threshold"]
        assert reached is not None and reached <= 400
        assert results[label]["final"][0] < 0.05 < results["L1 (naive)"]["final"][0]


@pytest.mark.slow
def test_mnist_bench_ranks_the_shipped_generator_above_the_one_step_teacher(tmp_path, capsys):
    assert full_bench.main(["mnist", "--num", "100", "--nfe", "1", "--out", str(tmp_path),
                            "--run", str(tmp_path / "no-run")]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"real data (100 of 5000)", "teacher Heun 1 NFE", "SiD one-step"}
    real, teacher, sid = (rows[k]["fid_mnist"] for k in ("real data (100 of 5000)", "teacher Heun 1 NFE", "SiD one-step"))
    assert real < sid < teacher / 5
    assert sum(rows["SiD one-step"]["class_histogram"]) == 100 and rows["SiD one-step"]["ms_per_image"] > 0
    assert json.loads((tmp_path / "mnist.json").read_text())["sid_fid"] == sid
    assert result["fid_vs_kimg"] == []  # no run directory: no curve, and no error
