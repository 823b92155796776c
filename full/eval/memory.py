"""Memory plan of SiD/SiDA on EDM2 teachers: what fits on one GPU, with which options.

GPU memory of a SiD iteration = the training state, proportional to the parameter count N, plus activations,
proportional to the batch per GPU. `memory_table` adds the two for every EDM2 size:

- **State** (bytes, fp32 master weights as `full.method.sid.SiDTrainer` keeps them): f_phi 4N (frozen), f_psi 4N
  and its Adam second moment 4N, G 4N and its second moment 4N, G_ema 4N; Adam's first moment is not kept when
  beta1 = 0 (`full.method.optim.MomentFreeAdam`; every EDM2 preset), else 4N more for G. Gradients exist for one
  network at a time (each step frees them), 4N. So 28N bytes (32N with g_beta1 > 0), whatever the precision:
  autocast computes in bf16/fp16 but stores fp32 weights.
- **The G step** is the peak: G's forward and backward through the frozen f_phi and f_psi (three U-Nets in one
  graph; the f_psi step holds one). Its memory beyond the state is measured, not modelled: `measure_g_step`
  runs `SiDTrainer.generator_step` on the CPU under torch's profiler (its allocator reports every allocation
  and free), once at batch b1 and once at b2, for a small EDM2 U-Net at the real latent size (64x64x4,
  1000 classes). The peak above the state is a + b s: the slope s is the activation memory per sample, the
  intercept a the step's per-parameter temporaries (G's gradient, normalised-weight copies), a / N bytes per
  parameter.
- **Scaling**: every EDM2 size has the same layout (channel_mult 1,2,3,4, 3 blocks per level, attention at
  16x16 and 8x8, heads of 64 channels), so every activation tensor, attention maps included, has a channel
  count proportional to model_channels: the per-sample memory scales as model_channels / 64 from the measured
  size (model_channels 64, EDM2's XXS), and the temporaries as N.

An "80 GB" GPU holds 80e9 bytes = 74.5 GiB; `GPU_RESERVE_GIB` of them go to the CUDA context, cuDNN workspaces
and allocator fragmentation, the rest (`usable_gib`, 71.5 GiB) to the state, the temporaries and the activations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from full.nets.edm2 import EDM2_CONFIGS

GIB = 2 ** 30
GPU_GIB = 80e9 / GIB          # an "80 GB" GPU (A100/H100 80GB): 80e9 bytes = 74.5 GiB
GPU_RESERVE_GIB = 3.0          # CUDA context, cuDNN workspaces, allocator fragmentation
MEASURED_CHANNELS = 64         # EDM2's XXS width, measured on the CPU
STATE_BYTES_PER_PARAM = 28     # f_phi, f_psi, G, G_ema (4 each), two Adam second moments, one gradient (4 each)
FIRST_MOMENT_BYTES = 4         # G's Adam first moment when g_beta1 > 0


def parameter_count(name: str) -> int:
    """Parameters of `full.nets.edm2.EDM2_CONFIGS[name]`, built on the meta device (nothing allocated)."""
    from full.nets.edm2 import build_edm2
    with torch.device("meta"):
        net = build_edm2(name)
    return sum(p.numel() for p in net.parameters())


def _peak_bytes(step) -> int:
    """Peak of the bytes allocated minus freed on the CPU while `step()` runs (torch profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


@dataclass(frozen=True)
class StepMemory:
    """One measured G step: bytes per sample (slope) and per parameter (intercept / N) beyond the state."""
    precision: str
    checkpointing: bool
    per_sample: float          # bytes per sample at MEASURED_CHANNELS
    per_param: float           # bytes per parameter of one network
    params: int                # N of the measured network


def measure_g_step(precision: str = "fp32", checkpointing: bool = False, batches: tuple[int, int] = (1, 2),
                   model_channels: int = MEASURED_CHANNELS, resolution: int = 64, channels: int = 4,
                   label_dim: int = 1000, objective: str = "sid") -> StepMemory:
    """Measure the memory of one SiD (or SiDA) G step beyond the training state, on the CPU, for an EDM2 U-Net
    of `model_channels` (EDM2's layout otherwise) at `resolution`^2 x `channels` with `label_dim` classes."""
    from full import distributed
    from full.method.presets import SiDConfig
    from full.method.sid import SiDTrainer
    from full.nets.edm2 import EDM2Precond
    torch.manual_seed(0)
    teacher = EDM2Precond(img_resolution=resolution, img_channels=channels, label_dim=label_dim, use_fp16=False,
                          model_channels=model_channels, dropout=0.0).eval()
    params = sum(p.numel() for p in teacher.parameters())
    peaks = []
    for b in batches:
        config = SiDConfig(objective=objective, batch=b, batch_gpu=b, precision=precision, checkpointing=checkpointing,
                           alpha=1.0, dropout=0.0, gan_after_kimg=0, g_after_kimg=0, p_mean=-0.4, p_std=1.0)
        trainer = SiDTrainer(config, teacher, distributed.Ranks(0, 1, torch.device("cpu")))
        trainer.generator_step()  # warm-up: Adam's state exists from here on, as in a running job
        peaks.append(_peak_bytes(trainer.generator_step))
        del trainer
    (b1, b2), (p1, p2) = batches, peaks
    slope = (p2 - p1) / (b2 - b1)
    return StepMemory(precision, checkpointing, slope, max(p1 - slope * b1, 0.0) / params, params)


# The released EDM2 sizes (the SiD(A) presets' teachers) and their widths, from EDM2's constructor arguments.
EDM2_SIZES = {name: EDM2_CONFIGS[name]["model_channels"] for name in
              ("img512-xs", "img512-s", "img512-m", "img512-l", "img512-xl", "img512-xxl",
               "img64-s", "img64-m", "img64-l", "img64-xl")}


@dataclass(frozen=True)
class PlanRow:
    name: str
    params: int
    state_gib: float
    temporaries_gib: float
    per_sample_gib: dict           # (precision, checkpointing) -> GiB per sample
    max_batch: dict                # (precision, checkpointing) -> largest batch per GPU that fits (0 = none)


def plan(measured: list[StepMemory], usable_gib: float = GPU_GIB - GPU_RESERVE_GIB, g_beta1: float = 0.0,
         sizes: dict[str, int] = EDM2_SIZES) -> list[PlanRow]:
    """Memory per EDM2 size from `measured` steps (`measure_g_step`, one per precision and checkpointing);
    img64 (3 pixel channels) is scaled like img512 (4 latent channels): the U-Net's activations do not depend
    on its input channels beyond the first and last layer."""
    rows = []
    state_per_param = STATE_BYTES_PER_PARAM + (FIRST_MOMENT_BYTES if g_beta1 > 0 else 0)
    for name, width in sizes.items():
        n = parameter_count(name)
        state = state_per_param * n / GIB
        per_sample, fits, temporaries = {}, {}, 0.0
        for m in measured:
            key = (m.precision, m.checkpointing)
            per_sample[key] = m.per_sample * width / MEASURED_CHANNELS / GIB
            temp = m.per_param * n / GIB
            temporaries = max(temporaries, temp)
            room = usable_gib - state - temp
            fits[key] = max(0, math.floor(room / per_sample[key])) if room > 0 else 0
        rows.append(PlanRow(name, n, state, temporaries, per_sample, fits))
    return rows


def memory_table(measured: list[StepMemory] | None = None, usable_gib: float = GPU_GIB - GPU_RESERVE_GIB,
                 g_beta1: float = 0.0) -> str:
    """The memory plan as a markdown table (measuring first when `measured` is None: a few minutes on a CPU)."""
    if measured is None:
        measured = [measure_g_step(p, c) for p in ("fp32", "bf16") for c in (False, True)]
    rows = plan(measured, usable_gib, g_beta1)
    keys = [(m.precision, m.checkpointing) for m in measured]
    label = {k: f"{k[0]}{' + ckpt' if k[1] else ''}" for k in keys}
    head = ["size", "parameters", "state (GiB)", "step temporaries, largest (GiB)"]
    head += [f"GiB / sample, {label[k]}" for k in keys] + [f"max batch / GPU, {label[k]}" for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name, f"{r.params / 1e6:,.0f} M", f"{r.state_gib:.1f}", f"{r.temporaries_gib:.1f}"]
        cells += [f"{r.per_sample_gib[k]:.2f}" for k in keys] + [str(r.max_batch[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
