"""Every figure of the explorer, as plain functions `draw(fig, ...)` of numpy data and a `matplotlib.figure.Figure`.

The pages compute the data and hand `functools.partial(draw, ...)` to `apps.common.show`, which builds and renders
it under the process-wide figure lock. Nothing here touches Streamlit or pyplot, so the same functions are rendered
from several threads at once in the tests.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 158, 0.05: no 1.58x10^2 tick labels


def _legend_below(ax, ncol: int = 2, **kwargs) -> None:
    """A legend under the axes, so it never covers the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=8,
                  frameon=False, **kwargs)


def _plain_log_axis(ax, values=None) -> None:
    """Log y scale whose tick labels read as plain numbers (1, 2, 5 per decade; every tick within a decade)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(PLAIN)
    finite = np.asarray([v for v in (values if values is not None else []) if v > 0 and np.isfinite(v)], dtype=float)
    narrow = len(finite) and finite.max() < 10 * finite.min()
    ax.yaxis.set_minor_formatter(PLAIN if narrow else NullFormatter())


# --------------------------------------------------------------------------- toy distillation

def toy_field(fig: Figure, xs: np.ndarray, density: np.ndarray, samples: np.ndarray, arrows: np.ndarray,
              teacher: np.ndarray, fake: np.ndarray, sigma: float, title: str) -> None:
    """Target density, generator samples, and the teacher/fake-score fields f(x) - x as arrows."""
    ax = fig.subplots()
    ax.contourf(xs, xs, density, levels=20, cmap="Blues")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, c="crimson", alpha=0.6, label="G samples x_g")
    ax.quiver(arrows[:, 0], arrows[:, 1], teacher[:, 0], teacher[:, 1], color="navy", alpha=0.7,
              label=f"teacher f_phi(x, {sigma:g}) - x")
    ax.quiver(arrows[:, 0], arrows[:, 1], fake[:, 0], fake[:, 1], color="darkorange", alpha=0.7,
              label=f"fake score f_psi(x, {sigma:g}) - x")
    ax.set(xlim=(xs[0], xs[-1]), ylim=(xs[0], xs[-1]), aspect="equal", xlabel="x_1", ylabel="x_2", title=title)
    _legend_below(ax, ncol=2)


def toy_curves(fig: Figure, current: tuple[str, Sequence[int], Sequence[float]] | None,
               compared: Sequence[tuple[str, Sequence[int], Sequence[float]]]) -> None:
    """Energy distance against generator step: the run on screen (thick) and earlier runs (thin), each once."""
    ax = fig.subplots()
    for label, steps, energies in compared:
        ax.plot(steps, energies, lw=1.2, alpha=0.8, label=label)
    if current is not None and len(current[1]):
        ax.plot(current[1], current[2], lw=2.4, color="crimson", label=current[0])
    _plain_log_axis(ax, [e for _, _, energies in [*compared, *([current] if current else [])] for e in energies])
    ax.set(xlabel="generator step", ylabel="energy distance to the target", title="distance to the target")
    ax.grid(alpha=0.3, which="both")
    _legend_below(ax, ncol=1)


# --------------------------------------------------------------------------- runs

LOSS_PANELS = [  # (title, y label, [(record part, term, legend label)])
    ("f_psi: denoising loss", "loss", [("fake", "loss", "f_psi loss"), ("fake", "denoise", "denoising term")]),
    ("f_psi: discriminator (SiDA)", "BCE", [("fake", "discriminator", "discriminator loss"),
                                            ("fake", "bce_real", "BCE on real"), ("fake", "bce_fake", "BCE on fake")]),
    ("discriminator accuracy (SiDA)", "accuracy", [("fake", "accuracy_real", "on real"),
                                                    ("fake", "accuracy_fake", "on fake")]),
    ("G: L1 and L2", "per-sample term", [("generator", "L1", "L1 = |f_phi - f_psi|^2"),
                                          ("generator", "L2", "L2 = (f_phi - f_psi)^T (f_phi - x_g)")]),
    ("G: the SiD combination", "loss", [("generator", "sid", "L2 - alpha L1"), ("generator", "loss", "G loss")]),
    ("G: GAN term (SiDA)", "BCE", [("generator", "gan", "GAN term")]),
]


def loss_panels(ticks: Sequence) -> list[tuple[str, str, list[tuple[str, np.ndarray]]]]:
    """The panels a log has terms for: (title, y label, [(legend label, values per tick)])."""
    panels = []
    for title, ylabel, series in LOSS_PANELS:
        lines = []
        for part, term, label in series:
            values = np.array([getattr(t, part).get(term, np.nan) for t in ticks], dtype=float)
            if np.isfinite(values).any():
                lines.append((label, values))
        panels.append((title, ylabel, lines))
    has_l2, has_sid = any("L2" in t.generator for t in ticks), any("sid" in t.generator for t in ticks)
    if has_l2 and not has_sid:  # SiD logs its combination L2 - alpha L1 as "loss" itself; SiDA logs it as "sid"
        panels = [(title, ylabel, [("L2 - alpha L1 (G loss)" if label == "G loss" else label, v) for label, v in lines])
                  for title, ylabel, lines in panels]
    return [p for p in panels if p[2]]


def run_losses(fig: Figure, kimg: np.ndarray, panels: list, alpha: float | None) -> None:
    """One panel per group of logged terms (f_psi, the discriminator, L1/L2, the combination, GAN), each with a
    legend and its own y axis."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax, (title, ylabel, lines) in zip(axes, panels):
        for label, values in lines:
            if alpha is not None:
                label = label.replace("alpha", f"{alpha:g}")
            ax.plot(kimg, values, marker="." if len(kimg) < 30 else None, label=label)
        ax.set(title=title, xlabel="kimg", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)


def fid_curves(fig: Figure, runs: Sequence[tuple[str, Sequence[float], Sequence[float]]],
               reference: Sequence[tuple[str, float]] = ()) -> None:
    """FID against kimg for several runs on one plot (plain-number log axis), with horizontal references."""
    ax = fig.subplots()
    for label, kimg, fid in runs:
        ax.plot(kimg, fid, "o-", ms=3, label=label)
    for label, value in reference:
        ax.axhline(value, ls=":", color="gray", lw=1)
        ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7,
                    color="dimgray")
    _plain_log_axis(ax, [f for _, _, fid in runs for f in fid])
    ax.set(xlabel="kimg (thousands of generator images)", ylabel="FID (lower is better)", title="FID against kimg")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- identities

def family_curves(fig: Figure, x: np.ndarray, levels: Sequence[float], sigma: float, curves: dict) -> None:
    """Exact noisy densities, denoisers and scores of a 1-D family at several noise levels."""
    axes = fig.subplots(1, 3)
    for s in levels:
        density, denoiser, score = curves[s]
        style = dict(lw=2.2 if np.isclose(s, sigma) else 1.0, label=f"sigma = {s:g}")
        axes[0].plot(x, density, **style)
        axes[1].plot(x, denoiser, **style)
        axes[2].plot(x, score, **style)
    for ax, (title, ylabel) in zip(axes, [("noisy density", "p(x_t)"), ("denoiser f", "E[x_0 | x_t]"),
                                          ("score", "d/dx_t log p(x_t)")]):
        ax.set(title=title, xlabel="x_t", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[2].set_ylim(-8, 8)
    _legend_below(axes[1], ncol=len(levels))


# --------------------------------------------------------------------------- failure case

PROP4_STYLE = {  # drawn so that coinciding lines stay visible: SiD dashed with markers over a thick L2
    "naive": dict(color="tab:red", lw=2),
    "projected": dict(color="tab:blue", lw=5, alpha=0.45),
    "sid": dict(color="navy", lw=1.6, ls="--", marker="o", ms=3, markevery=6),
    "true": dict(color="tab:green", lw=2),
}


def prop4_panels(fig: Figure, thetas: np.ndarray, gradients: dict, taus: np.ndarray, flows: dict,
                 labels: dict, sigma: float, alpha: float, theta0: float) -> None:
    """Proposition 4: each objective's theta-gradient against theta, and the gradient flow it produces."""
    ax1, ax2 = fig.subplots(1, 2)
    for key, label in labels.items():
        ax1.plot(thetas, gradients[key], label=label, **PROP4_STYLE[key])
        ax2.plot(taus, flows[key], label=label, **PROP4_STYLE[key])
    ax1.set(xlabel="theta (generator mean)", ylabel="E[d loss / d theta]", title=f"gradients, sigma={sigma:g}, alpha={alpha:g}")
    ax2.set(xlabel="tau (gradient-flow time)", ylabel="theta(tau)", title=f"gradient flows from theta(0) = {theta0:g}")
    for ax in (ax1, ax2):
        ax.axhline(0, color="gray", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def two_timescale_panels(fig: Figure, taus: np.ndarray, paths: dict, quasi_steady: dict, start: tuple[float, float]) -> None:
    """The lagging fake score: (theta, psi) phase portraits and theta(tau) for a few alphas, against the flow with
    psi pinned at psi*(theta) (dotted)."""
    ax1, ax2 = fig.subplots(1, 2)
    colors = dict(zip(paths, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]))
    for alpha, path in paths.items():
        ax1.plot(path[:, 0], path[:, 1], color=colors[alpha], label=f"alpha = {alpha:g}")
        ax2.plot(taus, path[:, 0], color=colors[alpha], label=f"alpha = {alpha:g}")
        ax2.plot(taus, quasi_steady[alpha], color=colors[alpha], ls=":", lw=1.2)
    ax1.plot(*start, "ko", ms=4)
    lim = max(1.0, np.nanmax(np.abs([start])) * 1.3)
    ax1.plot([-lim, lim], [-lim, lim], color="gray", lw=0.6, ls="--", label="psi = psi*(theta) = theta")
    ax1.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="theta (generator mean)", ylabel="psi (fake-score mean)",
            title="phase portrait (start: black dot)", aspect="equal")
    ax2.set(xlabel="tau (generator flow time)", ylabel="theta(tau)",
            title="theta(tau); dotted: psi pinned at psi*(theta)")
    bound = 3 * max(abs(start[0]), 1e-3)
    ax2.set_ylim(-bound, bound)
    for ax in (ax1, ax2):
        ax.axhline(0, color="gray", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def eigenvalue_panels(fig: Figure, alphas: np.ndarray, eigenvalues: np.ndarray, alpha: float,
                      etas: np.ndarray, critical_rates: np.ndarray) -> None:
    """Real and imaginary parts of the drift matrix's eigenvalues against alpha; the critical rate against alpha."""
    ax1, ax2 = fig.subplots(1, 2)
    for i, name in enumerate(["slow", "fast"]):
        ax1.plot(alphas, eigenvalues[:, i].real, lw=2, label=f"Re lambda ({name})")
    ax1.plot(alphas, np.abs(eigenvalues[:, 0].imag), color="gray", ls="--", label="|Im lambda| (oscillation)")
    ax1.axhline(0, color="black", lw=0.8)
    ax1.axvline(alpha, color="crimson", lw=1, ls=":", label=f"alpha = {alpha:g}")
    ax1.set(xlabel="alpha", ylabel="eigenvalue of A", title="eigenvalues (stable while both Re < 0)")
    ax2.plot(alphas, critical_rates, color="tab:purple", lw=2, label="critical rate eta_c(alpha)")
    ax2.fill_between(alphas, np.maximum(critical_rates, 0), np.full_like(alphas, max(etas.max(), 1e-3)),
                     color="tab:green", alpha=0.12, label="eta > eta_c: trace < 0")
    ax2.axhline(etas.min(), color="crimson", lw=1, ls=":", label=f"your eta = {etas.min():g}")
    ax2.set(xlabel="alpha", ylabel="eta (fake-score rate)", title="how fast f_psi must be fitted",
            ylim=(0, max(etas.max(), 1e-3)))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


# --------------------------------------------------------------------------- choosing alpha

def alpha_study(fig: Figure, results: Sequence[dict], axis: str, metric: str, thresholds) -> None:
    """One study: steps to the threshold and the final distance against alpha, one line per value of the study's
    axis, mean over seeds with the min-max spread; seeds that never reached the threshold are marked at the top.
    `thresholds` is one number, or {value: threshold} when each value has its own (dotted, in its colour)."""
    ax1, ax2 = fig.subplots(1, 2)
    values = list(dict.fromkeys(r["value"] for r in results))
    finals = []
    for i, value in enumerate(values):
        rows = sorted((r for r in results if r["value"] == value), key=lambda r: r["alpha"])
        a = np.array([r["alpha"] for r in rows], dtype=float)
        color = f"C{i}"
        reached = [np.array([s for s in r["steps_to_threshold"] if s is not None], dtype=float) for r in rows]
        mean = np.array([x.mean() if len(x) else np.nan for x in reached])
        low = np.array([x.min() if len(x) else np.nan for x in reached])
        high = np.array([x.max() if len(x) else np.nan for x in reached])
        ax1.plot(a, mean, "o-", color=color, label=f"{axis} = {value}")
        ax1.fill_between(a, low, high, color=color, alpha=0.15)
        never = [r["alpha"] for r, x in zip(rows, reached) if len(x) < len(r["steps_to_threshold"])]
        if never:  # along the top edge of the axes, whatever the step scale
            ax1.plot(never, [0.97] * len(never), "x", color=color, ms=8, mew=2, transform=ax1.get_xaxis_transform(),
                     clip_on=False)
        final = [np.array([f for f in r["final"] if f is not None and np.isfinite(f)], dtype=float) for r in rows]
        finals += [f for x in final for f in x]
        ax2.plot(a, [x.mean() if len(x) else np.nan for x in final], "o-", color=color, label=f"{axis} = {value}")
        ax2.fill_between(a, [x.min() if len(x) else np.nan for x in final],
                         [x.max() if len(x) else np.nan for x in final], color=color, alpha=0.15)
        if isinstance(thresholds, dict) and thresholds.get(value) is not None:
            ax2.axhline(thresholds[value], color=color, ls=":", lw=1)
            finals.append(thresholds[value])
    if isinstance(thresholds, (int, float)):
        ax2.axhline(thresholds, color="gray", ls=":", lw=1, label=f"threshold {thresholds:g}")
        finals.append(thresholds)
    ax1.set(xlabel="alpha", ylabel=f"steps until {metric} <= threshold",
            title="steps to the threshold (x at the top: some seeds never reach it)")
    if not any(s is not None for r in results for s in r["steps_to_threshold"]):
        ax1.text(0.5, 0.5, "no seed reached the threshold", transform=ax1.transAxes, ha="center", va="center")
        ax1.set_yticks([])
    _plain_log_axis(ax2, finals)
    ax2.set(xlabel="alpha", ylabel=f"final {metric}",
            title="final distance (mean, min-max over seeds; dotted: threshold)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
