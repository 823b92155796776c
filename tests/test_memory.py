"""The EDM2 memory plan (`full.eval.memory`): its arithmetic against a hand computation, and the CPU measurement
of a G step on a tiny U-Net (activations grow with the batch; checkpointing f_phi and f_psi holds fewer)."""
import pytest

from full.eval import memory
from full.eval.memory import GIB, StepMemory, measure_g_step, memory_table, parameter_count, plan


def test_plan_adds_state_temporaries_and_activations():
    step = StepMemory("bf16", False, per_sample=0.1 * GIB, per_param=10.0, params=1)
    (row,) = plan([step], usable_gib=80.0, sizes={"img512-xxl": 448})
    n = parameter_count("img512-xxl")
    assert n == 1_523_164_773
    assert row.state_gib == pytest.approx(28 * n / GIB)          # 4N x (f_phi, f_psi, G, G_ema, 2 Adam v, 1 grad)
    assert row.temporaries_gib == pytest.approx(10 * n / GIB)
    per_sample = 0.1 * 448 / 64                                   # scaled by model_channels from XXS
    assert row.per_sample_gib[("bf16", False)] == pytest.approx(per_sample)
    assert row.max_batch[("bf16", False)] == int((80.0 - 38 * n / GIB) // per_sample) > 0
    (with_moment,) = plan([step], usable_gib=40.0, sizes={"img512-xxl": 448}, g_beta1=0.9)
    assert with_moment.state_gib == pytest.approx(32 * n / GIB)
    assert plan([step], usable_gib=10.0, sizes={"img512-xxl": 448})[0].max_batch[("bf16", False)] == 0
    table = memory_table([step], usable_gib=40.0)
    assert table.count("\n") == 1 + len(memory.EDM2_SIZES) and "| img512-xxl | 1,523 M |" in table


@pytest.mark.usefixtures("single_thread")
def test_g_step_measurement_on_a_tiny_unet():
    kwargs = dict(model_channels=16, resolution=16, channels=4, label_dim=0, batches=(1, 3))
    plain = measure_g_step("fp32", False, **kwargs)
    checkpointed = measure_g_step("fp32", True, **kwargs)
    # one sample's activations through three U-Nets: at least the 16x16x16 feature maps of several dozen layers
    assert plain.per_sample > 50 * 16 * 16 * 16 * 4
    assert checkpointed.per_sample < 0.85 * plain.per_sample     # f_phi and f_psi recomputed, one at a time
    assert plain.per_param > 4                                   # at least G's gradient
