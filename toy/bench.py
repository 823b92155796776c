"""`python -m toy bench`: SiD at several alpha against L1, L2, Diff-Instruct, DMD and SiDA on the same footing.

Two settings, every method with the same generator, initial weights, noise seeds, optimiser and budget:
- `mixture`: an MLP generator on the 2-D 8-Gaussian target with a fitted MLP fake score (the full
  algorithm), scored by the energy distance to exact target samples;
- `gaussian`: an affine generator on a correlated 2-D Gaussian with the exact fake score, scored by
  the exact KL(p_theta || p_data).
For each method: the first evaluated step at which the distance falls below a threshold, the final distance
(mean over seeds) and, on the mixture, the share of samples left on the bridges between its modes (more than
3 standard deviations from every mode). SiDA needs a fitted fake score (its discriminator) and real samples,
so it runs on the mixture only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from toy.distill import ToyConfig, ToyDistillation, supported
from toy.metrics import steps_to_threshold

METHODS = {  # label -> (objective, alpha)
    "SiD alpha=0.5": ("sid", 0.5),
    "SiD alpha=1.0": ("sid", 1.0),
    "SiD alpha=1.2": ("sid", 1.2),
    "L1 (naive)": ("naive", 0.0),
    "L2 (projected)": ("projected", 0.0),
    "Diff-Instruct": ("diff_instruct", 0.0),
    "DMD": ("dmd", 0.0),
    "SiDA alpha=1.0": ("sida", 1.0),
}


@dataclass(frozen=True)
class Setting:
    config: ToyConfig
    metric: str          # 'energy' or 'kl'
    threshold: float     # distance that counts as reached


SETTINGS = {
    "mixture": Setting(ToyConfig(target="8gaussians", generator="mlp", steps=1500, batch=512, lr=1e-3,
                                 fake_steps=5, eval_every=50, eval_samples=2000), "energy", 0.05),
    "gaussian": Setting(ToyConfig(target="gaussian2d", generator="affine", steps=600, batch=512, lr=1e-2,
                                  eval_every=10, eval_samples=1000), "kl", 0.05),
}


def run_method(setting: Setting, objective: str, alpha: float, seed: int, steps: int | None = None) -> dict:
    """One run: the distance curve, the first step below the threshold (None if never) and the final distance."""
    config = dataclasses.replace(setting.config, loss=objective, alpha=alpha, seed=seed,
                                 steps=steps or setting.config.steps)
    records = [r for r in ToyDistillation(config) if r.energy is not None]
    curve = [(r.step, getattr(r, setting.metric)) for r in records]
    reached = steps_to_threshold(*zip(*curve), setting.threshold)
    return {"curve": curve, "steps_to_threshold": reached, "final": curve[-1][1], "off_mode": records[-1].off_mode}


def bench(settings: list[str], seeds: list[int], steps: int | None = None, progress=None) -> dict:
    """All methods on all settings; returns {setting: {method: summary}} with per-seed results."""
    results = {}
    for name in settings:
        setting = SETTINGS[name]
        results[name] = {"metric": setting.metric, "threshold": setting.threshold, "seeds": seeds, "methods": {}}
        for label, (objective, alpha) in METHODS.items():
            if not supported(setting.config.generator, objective):
                continue
            runs = [run_method(setting, objective, alpha, seed, steps) for seed in seeds]
            if progress:
                progress(name, label)
            reached = [r["steps_to_threshold"] for r in runs]
            results[name]["methods"][label] = {
                "steps_to_threshold": reached,
                "final": [r["final"] for r in runs],
                "final_mean": sum(r["final"] for r in runs) / len(runs),
                "off_mode": [r["off_mode"] for r in runs],
                "curves": [r["curve"] for r in runs],
            }
    return results


def format_results(results: dict) -> str:
    lines = []
    for name, block in results.items():
        lines.append(f"\n[{name}] metric={block['metric']}, threshold={block['threshold']}, seeds={block['seeds']}")
        lines.append(f"{'method':18s} {'steps to threshold':>24s} {'final (per seed)':>28s} {'final mean':>11s}"
                     f" {'off-mode mass':>16s}")
        for label, r in block["methods"].items():
            reached = ", ".join("never" if s is None else str(s) for s in r["steps_to_threshold"])
            finals = ", ".join(f"{v:.4g}" for v in r["final"])
            off = ", ".join(f"{v:.1%}" for v in r["off_mode"])
            lines.append(f"{label:18s} {reached:>24s} {finals:>28s} {r['final_mean']:>11.4g} {off:>16s}")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    """Distance against step for every method (first seed), one panel per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (name, block) in zip(axes[0], results.items()):
        for label, r in block["methods"].items():
            steps, values = zip(*r["curves"][0])
            ax.semilogy(steps, values, label=label, lw=1.4, ls="--" if "SiD" not in label else "-")
        ax.axhline(block["threshold"], color="gray", lw=0.8, ls=":")
        ax.set(title=f"{name}: {block['metric']} to the target", xlabel="generator step", ylabel=block["metric"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
