"""Page 5: how to choose alpha. Renders the toy study written to docs/alpha_study.json: for each study (the data's
dimension, an exact or a fitted teacher, the fake-score steps per generator step), steps to a distance threshold and
the final distance against alpha, one line per value, mean and min-max spread over seeds; and the study's summary.

Schema: {"alphas": [...], "seeds": [...], "metric": str, "threshold": float or a description, "summary": markdown,
"studies": {NAME: {"axis": str, "values": [...], "results": [{"value", "alpha", "steps_to_threshold": [int|null per
seed], "final": [float|null per seed]}]}}}. Optional per study: "thresholds" (one per value, when the threshold is a
description), "steps" (the step budget per value). SID_ALPHA_STUDY overrides the file's path.
"""
from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import streamlit as st

from apps import plots
from apps.common import render_png, setup

REPO = Path(__file__).resolve().parents[2]
STUDY = Path(os.environ.get("SID_ALPHA_STUDY", REPO / "docs" / "alpha_study.json"))
TITLES = {"dimension": "The data's dimension", "teacher": "An exact or a fitted teacher",
          "fake_steps": "Fake-score steps per generator step (how far f_psi lags)"}

setup()
st.title("How to choose alpha")
st.markdown(r"""SiD's generator loss is $L_2 - \alpha L_1$. With an exact fake score held at its optimum, $\alpha$
drops out of the gradient (see *The failure case*); once $f_\psi$ lags behind the generator, $\alpha$ changes the
dynamics: a larger $\alpha$ needs a faster fake score. The study below measures it on toy problems: for each
setting, how many generator steps each $\alpha$ needs to reach the distance threshold, and where it ends.""")


def check_schema(study: dict) -> list[str]:
    """What is missing or malformed in the study file (empty if it follows the schema)."""
    problems = [f"missing key '{k}'" for k in ("alphas", "seeds", "metric", "threshold", "studies") if k not in study]
    for name, block in study.get("studies", {}).items():
        for key in ("axis", "values", "results"):
            if key not in block:
                problems.append(f"study '{name}' has no '{key}'")
        for row in block.get("results", []):
            missing = {"value", "alpha", "steps_to_threshold", "final"} - set(row)
            if missing:
                problems.append(f"study '{name}': a result lacks {', '.join(sorted(missing))}")
                break
    return problems


def per_value(block: dict, key: str) -> dict:
    """{value: entry} of an optional per-value list of a study (thresholds, step budgets)."""
    entries = block.get(key)
    return dict(zip(block["values"], entries)) if isinstance(entries, list) else {}


def table(block: dict, label: str) -> dict:
    order = {value: i for i, value in enumerate(block["values"])}
    rows = sorted(block["results"], key=lambda r: (order.get(r["value"], 0), r["alpha"]))
    budgets, thresholds = per_value(block, "steps"), per_value(block, "thresholds")
    out = {label: [], "alpha": [], "reached": [], "steps to threshold (mean, min-max)": [],
           "final (mean ± std)": []}
    if thresholds:
        out["threshold"] = []
    for r in rows:
        reached = [s for s in r["steps_to_threshold"] if s is not None]
        final = np.array([f for f in r["final"] if f is not None and np.isfinite(f)], dtype=float)
        lost = len(r["final"]) - len(final)
        out[label].append(str(r["value"]))
        out["alpha"].append(f"{r['alpha']:g}")
        out["reached"].append(f"{len(reached)}/{len(r['steps_to_threshold'])}")
        budget = f" in {budgets[r['value']]} steps" if r["value"] in budgets else ""
        out["steps to threshold (mean, min-max)"].append(
            f"{np.mean(reached):.0f} ({min(reached)}-{max(reached)})" if reached else f"never{budget}")
        out["final (mean ± std)"].append((f"{final.mean():.4g} ± {final.std():.2g}" if len(final) else "-")
                                         + (f" ({lost} diverged)" if lost else ""))
        if thresholds:
            value = thresholds.get(r["value"])
            out["threshold"].append(f"{value:.4g}" if isinstance(value, (int, float)) else "-")
    return out


@st.cache_data(max_entries=16, show_spinner=False)
def study_png(path: str, version: int, name_of_study: str, metric: str, thresholds) -> bytes:
    """One study's figure, rendered once per version (mtime) of the file and shared by every session: rendering
    holds the process-wide figure lock, which a classroom's sessions would otherwise queue on at every visit."""
    block = json.loads(Path(path).read_text())["studies"][name_of_study]
    return render_png(partial(plots.alpha_study, results=block["results"], axis=name_of_study, metric=metric,
                              thresholds=thresholds), figsize=(12, 4.2))


if not STUDY.is_file():
    st.warning(f"The alpha study has not been run here: `{STUDY.relative_to(REPO) if STUDY.is_relative_to(REPO) else STUDY}` "
               "is missing, so there is nothing to show yet. The study lives in `toy/`; when it has written its "
               "results to that file, this page shows them.")
    st.stop()

try:
    study = json.loads(STUDY.read_text())
    problems = check_schema(study) if isinstance(study, dict) else ["the file is not a JSON object"]
except json.JSONDecodeError as error:
    study, problems = {}, [f"not valid JSON ({error})"]
if problems:
    st.error(f"`{STUDY.name}` does not follow the alpha study's schema: " + "; ".join(problems[:5]))
    st.stop()

metric = str(study["metric"])
name = metric.split(" (")[0]  # "energy distance (V-statistic) between ..." -> "energy distance"
threshold = study["threshold"]
number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
st.markdown(f"**{len(study['alphas'])} values of alpha** ({', '.join(f'{a:g}' for a in study['alphas'])}), "
            f"**{len(study['seeds'])} seeds** each. The distance: {metric}. The threshold: "
            + (f"**{threshold:g}**." if number else f"{threshold}."))
if study.get("summary"):
    st.subheader("What the study says")
    st.markdown(study["summary"])

for name_of_study, block in study["studies"].items():
    st.header(TITLES.get(name_of_study, name_of_study))
    st.caption(f"{block['axis']}: " + ", ".join(str(v) for v in block["values"]))  # the axis in full
    thresholds = float(threshold) if number else {v: t for v, t in per_value(block, "thresholds").items()
                                                 if isinstance(t, (int, float))}
    st.image(study_png(str(STUDY), STUDY.stat().st_mtime_ns, name_of_study, name, thresholds), width="stretch")
    st.dataframe(table(block, name_of_study), hide_index=True, width="stretch")
