"""The benchmarks run end to end at small sizes, and what they report has the properties that make them useful."""
import json

import pytest

import torch
from torch.utils.flop_counter import FlopCounterMode

from full import bench as full_bench
from full import distributed
from full.method.presets import SiDConfig
from full.method.sid import SiDTrainer
from tiny import tiny_teacher
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
def test_mnist_bench_scores_models_over_disjoint_seed_sets(tmp_path, capsys):
    (tmp_path / "empty-run").mkdir()
    assert full_bench.main(["mnist", "--num", "100", "--sets", "2", "--nfe", "1", "--out", str(tmp_path),
                            "--runs", f"SiD={tmp_path / 'empty-run'}"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"real data (100 of 5000)", "teacher Heun 1 NFE", "SiD one-step", "SiD²A one-step"}
    real, teacher, sid, sid2a = (rows[k] for k in ("real data (100 of 5000)", "teacher Heun 1 NFE", "SiD one-step",
                                                   "SiD²A one-step"))
    assert real["fid_mnist"] < sid2a["fid_mnist"] < sid["fid_mnist"] < teacher["fid_mnist"] / 5
    for row in (teacher, sid):  # mean and sample std over the two seed sets
        assert len(row["fid_per_set"]) == 2 and row["fid_per_set"][0] != row["fid_per_set"][1]
        assert row["fid_mnist"] == pytest.approx(sum(row["fid_per_set"]) / 2)
        assert row["fid_std"] == pytest.approx(abs(row["fid_per_set"][0] - row["fid_per_set"][1]) / 2 ** 0.5)
    assert sum(sid["class_histogram"]) == 200 and sid["ms_per_image"] > 0
    assert json.loads((tmp_path / "mnist.json").read_text())["rows"] == result["rows"]
    assert result["fid_vs_kimg"] == {"SiD": []}  # a run without snapshots: no curve, and no error
    assert (tmp_path / "mnist_samples.png").stat().st_size > 0  # the same seeds for every model, side by side


def test_mnist_bench_refuses_even_nfe_and_malformed_generators(tmp_path):
    import subprocess
    import sys
    run = lambda *a: subprocess.run([sys.executable, "-m", "full.bench", "mnist", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    even = run("--nfe", "4", "--out", str(tmp_path))
    assert even.returncode == 2 and "every NFE must be odd" in even.stderr and "Traceback" not in even.stderr
    bad = run("--generators", "assets/mnist16-sid.json")
    assert bad.returncode == 2 and "write NAME=PATH" in bad.stderr


def test_step_arithmetic_is_five_network_evaluations_and_their_backward_passes():
    """The work the step benchmark counts is the official loop's: G without grad and f_psi (fake-score step), then
    G, f_phi and f_psi (generator step), so the forward convolutions are exactly 5 network evaluations. Backward:
    f_psi (fake step) and G need input and weight gradients (2 evaluations' worth each), f_phi and f_psi (G step)
    only input gradients (1 each): 6, less the first layers' input gradients (nothing needs them) and the weight
    gradients of the fixed resampling filters."""
    net = tiny_teacher(dropout=0.1)
    trainer = SiDTrainer(SiDConfig(batch=4, batch_gpu=4, precision="fp32"), net,
                         distributed.Ranks(0, 1, torch.device("cpu")))
    one = FlopCounterMode(display=False)
    with one, torch.no_grad():
        net(torch.randn(4, 1, 8, 8), torch.ones(4), None)
    evaluation = one.get_flop_counts()["Global"][torch.ops.aten.convolution]
    nimg = trainer.nimg
    flops = full_bench.iteration_flops(trainer)
    assert trainer.nimg == nimg + 4
    assert flops["aten.convolution"] == 5 * evaluation
    assert 5.9 * evaluation < flops["aten.convolution_backward"] < 6 * evaluation

