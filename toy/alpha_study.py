"""`python -m toy alpha`: how to choose SiD's alpha, measured on toy distillation.

SiD's generator loss is L2 - alpha L1 (Zhou et al. 2024, Eq. 22), with L1 = ||f_phi - f_psi||^2 and
L2 = (f_phi - f_psi)^T (f_phi - x_g), per sample divided by mean|x_g - f_phi|. With f_psi held at the exact
fake score, Proposition 4's example gives L1 no gradient, so alpha drops out; alpha matters through how far
f_psi lags behind the generator, how wrong the teacher is and how the distributions sit in space. The study
sweeps alpha along three axes, each a separate "study" that holds everything else at a base configuration:

- ``dimension``: `toy.targets.random_mixture` in d = 2, 8, 16, 32, 64 with the exact teacher;
- ``teacher``: the exact teacher against a small MLP denoiser fitted to target samples (EDM's denoising
  loss, Karras et al. 2022, Eq. 2), on one of those targets;
- ``fake_steps``: k f_psi updates per G update (Algorithm 1 with k inner steps), on the same target.

Each run is scored by the energy distance between generator samples and exact target samples (any
dimension). The threshold of a setting is a multiple of that distance's floor, the energy distance between
two independent target sets of the same size (`toy.metrics.energy_floor`). Reported per seed: the first
evaluated step at or below the threshold (None if never) and the final distance (mean of the last few
evaluations, which smooths the step-to-step jitter of a constant learning rate).

The study is data (`Setting` rows in a `StudyPlan`; `PRESETS` holds ``full`` and ``quick``), `run_study`
yields one `RunRecord` per (setting, alpha, seed), and `study_document` / `write_outputs` turn the records
into ``alpha_study.json`` and ``alpha_study.png``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from toy.distill import FITTED_TEACHERS, ToyConfig, ToyDistillation, fit_teacher, teacher_key
from toy.metrics import energy_distance, energy_floor, steps_to_threshold
from toy.targets import STUDY_DIMENSIONS, make_target

STUDIES = ("dimension", "teacher", "fake_steps")


@dataclass(frozen=True)
class Setting:
    """One value of one study axis: the run's configuration, all but alpha and seed."""
    study: str              # 'dimension', 'teacher' or 'fake_steps'
    value: int | str        # the axis value: d, 'exact'/'fitted', k
    config: ToyConfig       # loss 'sid'; alpha and seed are set per run


@dataclass(frozen=True)
class StudyPlan:
    """A whole study: every setting is run at every alpha and seed."""
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    settings: tuple[Setting, ...]
    axes: dict = field(default_factory=dict)   # study -> what its axis is (for the JSON and the plots)
    threshold_factor: float = 10.0             # threshold = factor x the energy-distance floor of the setting
    final_evals: int = 5                       # "final" = mean distance over this many last evaluations
    floor_repeats: int = 5                     # pairs of target sets averaged into the floor

    def runs(self) -> list[tuple[Setting, float, int]]:
        return [(s, a, seed) for s in self.settings for a in self.alphas for seed in self.seeds]


@dataclass
class RunRecord:
    """The result of one run of one setting at one alpha and seed."""
    study: str
    value: int | str
    alpha: float
    seed: int
    eval_steps: list[int]              # generator steps at which the distance was evaluated
    distances: list[float]             # energy distance to the exact target at those steps
    floor: float                       # energy distance between two independent target sets (same n)
    threshold: float                   # plan.threshold_factor x floor
    steps_to_threshold: int | None     # first evaluated step at or below the threshold, None if never
    final: float                       # mean of the last plan.final_evals distances
    diverged: bool                     # `diverged(distances, threshold, final)`
    cpu_seconds: float                 # CPU time of the run (0 when it was shared with another setting)
    run_key: str = ""                  # the run's full configuration (what `run_study(previous=...)` matches)

    def to_json(self) -> dict:
        """The record as strict JSON (non-finite distances become null)."""
        out = dataclasses.asdict(self)
        out["distances"] = [_finite(d) for d in self.distances]
        out["final"] = _finite(self.final)
        return out

    @classmethod
    def from_json(cls, row: dict) -> "RunRecord":
        row = dict(row, distances=_values(row["distances"]), final=_values([row["final"]])[0])
        return cls(**row)


def save_records(records: list[RunRecord], path: str | Path) -> None:
    """Append records to a JSON-lines file (one record a line), e.g. to resume an interrupted study."""
    with Path(path).open("a") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), allow_nan=False) + "\n")


def load_records(path: str | Path) -> list[RunRecord]:
    """The records of a JSON-lines file written by `save_records` (none if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [RunRecord.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def final_distance(distances: list[float], last: int) -> float:
    """Mean of the last `last` distances (all of them if there are fewer); inf if any of them is not finite."""
    tail = distances[-last:]
    return sum(tail) / len(tail) if all(math.isfinite(d) for d in tail) else math.inf


def diverged(distances: list[float], threshold: float, final: float) -> bool:
    """A run diverged when its final distance is not finite, or exceeds both its first evaluated distance and
    ten thresholds: it ended farther from the target than it was early on, by more than jitter."""
    return not math.isfinite(final) or final > max(distances[0], 10 * threshold)


# --------------------------------------------------------------------------- presets


def make_plan(base: ToyConfig, alphas, seeds, dims, side_target: str, fitted: ToyConfig, ks) -> StudyPlan:
    """The three studies around `base`: dimension over `dims`; teacher and fake_steps on `side_target`."""
    side = dataclasses.replace(base, target=side_target)
    settings = ([Setting("dimension", d, dataclasses.replace(base, target=f"gmm{d}d")) for d in dims]
                + [Setting("teacher", "exact", side), Setting("teacher", "fitted", fitted)]
                + [Setting("fake_steps", k, dataclasses.replace(side, fake_steps=k)) for k in ks])
    axes = {"dimension": "dimension d of the target (gmm<d>d: four overlapping Gaussians), exact teacher",
            "teacher": f"teacher f_phi on {side_target}: the exact denoiser, or an MLP denoiser fitted to target "
                       f"samples ({fitted.teacher_steps} Adam steps, width {fitted.teacher_hidden})",
            "fake_steps": f"f_psi updates per G update (k) on {side_target}, exact teacher"}
    return StudyPlan(tuple(alphas), tuple(seeds), tuple(settings), axes)


# The full study: MLP generator and MLP fake score (the whole algorithm), Adam 1e-3 for both, batch 256,
# k = 5 f_psi steps per G step after 200 warm-up f_psi steps, 600 G steps, evaluation every 50 steps on
# 2000 samples. The teacher and fake_steps studies run on the 64-D mixture, where alpha matters most.
_FULL_BASE = ToyConfig(generator="mlp", loss="sid", steps=600, batch=256, lr=1e-3, fake_lr=1e-3, fake_steps=5,
                       fake_warmup=200, hidden=128, eval_every=50, eval_samples=2000)
_QUICK_BASE = ToyConfig(generator="mlp", loss="sid", steps=200, batch=128, lr=1e-3, fake_lr=1e-3, fake_steps=2,
                        fake_warmup=30, hidden=64, eval_every=25, eval_samples=500)
PRESETS = {
    "full": make_plan(_FULL_BASE, alphas=(0.0, 0.5, 1.0, 1.2, 1.5), seeds=(0, 1, 2), dims=STUDY_DIMENSIONS,
                  side_target="gmm64d",
                  fitted=dataclasses.replace(_FULL_BASE, target="gmm64d", teacher="fitted", teacher_steps=2000,
                                             teacher_hidden=128, teacher_batch=512),
                  ks=(1, 2, 5)),
    # A tiny version for CI and the notebook (about 20 CPU-seconds): one seed, short runs, small nets.
    "quick": make_plan(_QUICK_BASE, alphas=(0.0, 0.5, 1.0, 1.2, 1.5), seeds=(0,), dims=(2, 8), side_target="gmm8d",
                   fitted=dataclasses.replace(_QUICK_BASE, target="gmm8d", teacher="fitted", teacher_steps=300,
                                              teacher_hidden=64, teacher_batch=256),
                   ks=(1, 2)),
}


def with_overrides(plan: StudyPlan, alphas=None, seeds=None, steps: int | None = None) -> StudyPlan:
    """The plan with other alphas, seeds or G steps per run (every setting)."""
    settings = plan.settings if steps is None else tuple(
        dataclasses.replace(s, config=dataclasses.replace(s.config, steps=steps)) for s in plan.settings)
    return dataclasses.replace(plan, alphas=tuple(alphas or plan.alphas), seeds=tuple(seeds or plan.seeds),
                               settings=settings)


def describe_plan(plan: StudyPlan) -> str:
    """The resolved plan, one line per setting (what ``--dry-run`` prints)."""
    defaults = ToyConfig()
    distinct = len({_run_key(_run_config(*r)) for r in plan.runs()})
    lines = [f"alphas {list(plan.alphas)}, seeds {list(plan.seeds)}, threshold {plan.threshold_factor:g} x floor, "
             f"final = mean of the last {plan.final_evals} evaluations",
             f"{len(plan.runs())} (setting, alpha, seed) cells, {distinct} distinct runs"]
    for s in plan.settings:
        changed = {f.name: getattr(s.config, f.name) for f in dataclasses.fields(ToyConfig)
                   if getattr(s.config, f.name) != getattr(defaults, f.name)
                   and f.name not in ("alpha", "seed", "loss")}
        lines.append(f"  {s.study}={s.value}: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


def _run_config(setting: Setting, alpha: float, seed: int) -> ToyConfig:
    return dataclasses.replace(setting.config, loss="sid", alpha=alpha, seed=seed)


def _run_key(config: ToyConfig) -> str:
    return repr(config)


def _distance_curve(config: ToyConfig, teacher: torch.nn.Module | None = None) -> tuple[list, list, float]:
    """One run on one thread: (evaluation steps, energy distances, CPU seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if teacher is not None:
            FITTED_TEACHERS.setdefault(teacher_key(config), teacher)
        start = time.process_time()
        curve = [(r.step, r.energy) for r in ToyDistillation(config) if r.energy is not None]
        return [s for s, _ in curve], [d for _, d in curve], time.process_time() - start
    finally:
        torch.set_num_threads(threads)


def _single_thread() -> None:
    torch.set_num_threads(1)


def setting_floors(plan: StudyPlan) -> dict[tuple[str, int], float]:
    """The energy-distance floor of every (target, eval_samples) in the plan."""
    floors = {}
    for s in plan.settings:
        key = (s.config.target, s.config.eval_samples)
        if key not in floors:
            floors[key] = energy_floor(make_target(key[0]), key[1], plan.floor_repeats, seed=12_345)
    return floors


def run_study(plan: StudyPlan, workers: int = 1, progress: Callable[[int, int, RunRecord], None] | None = None,
              previous: Iterable[RunRecord] = ()) -> Iterator[RunRecord]:
    """Run every setting at every alpha and seed; yield one `RunRecord` per (setting, alpha, seed) as runs end.

    Each run uses one thread, so its result does not depend on the machine's core count; identical runs
    shared by two settings (the base configuration appears in every study) run once. With ``workers > 1``
    the runs go to that many processes; fitted teachers are then fitted once per seed in the pool and sent
    with the runs that need them. Runs whose exact configuration has a record in `previous` are not run
    again: their curve is reused (first). ``progress(done, total, record)`` is called after every record.
    """
    for setting, alpha, seed in plan.runs():
        _run_config(setting, alpha, seed).validate()
    floors = setting_floors(plan)
    by_key: dict[str, list[tuple[Setting, float, int]]] = {}
    configs: dict[str, ToyConfig] = {}
    for setting, alpha, seed in plan.runs():
        config = _run_config(setting, alpha, seed)
        by_key.setdefault(_run_key(config), []).append((setting, alpha, seed))
        configs[_run_key(config)] = config
    total, done = len(plan.runs()), 0

    def records(key: str, result: tuple[list, list, float]) -> Iterator[RunRecord]:
        nonlocal done
        eval_steps, distances, cpu = result
        for i, (setting, alpha, seed) in enumerate(by_key[key]):
            floor = floors[(setting.config.target, setting.config.eval_samples)]
            threshold = plan.threshold_factor * floor
            final = final_distance(distances, plan.final_evals)
            record = RunRecord(setting.study, setting.value, alpha, seed, eval_steps, distances, floor, threshold,
                               steps_to_threshold(eval_steps, distances, threshold), final,
                               diverged(distances, threshold, final), cpu if i == 0 else 0.0, key)
            done += 1
            if progress:
                progress(done, total, record)
            yield record

    known = {}
    for r in previous:
        if r.run_key in configs and (r.run_key not in known or r.cpu_seconds > known[r.run_key][2]):
            known[r.run_key] = (r.eval_steps, r.distances, r.cpu_seconds)
    for key in known:
        yield from records(key, known[key])
    configs = {key: c for key, c in configs.items() if key not in known}

    if workers <= 1:
        for key, config in configs.items():
            yield from records(key, _distance_curve(config))
        return

    needs_teacher = {key: teacher_key(c) for key, c in configs.items() if c.teacher == "fitted"}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_thread) as pool:
        fits = {}
        for key, tkey in needs_teacher.items():
            if tkey not in fits.values():
                fits[pool.submit(fit_teacher, configs[key])] = tkey
        running = {pool.submit(_distance_curve, c): key for key, c in configs.items() if key not in needs_teacher}
        while fits or running:
            finished, _ = wait([*fits, *running], return_when=FIRST_COMPLETED)
            for future in finished:
                if future in fits:
                    tkey, teacher = fits.pop(future), future.result()
                    FITTED_TEACHERS.setdefault(tkey, teacher)
                    for key in [k for k, t in needs_teacher.items() if t == tkey]:
                        running[pool.submit(_distance_curve, configs[key], teacher)] = key
                else:
                    yield from records(running.pop(future), future.result())


def teacher_distance(config: ToyConfig, num_steps: int = 18) -> float:
    """Energy distance to the exact target of the teacher's own samples (EDM's deterministic Heun sampler,
    Karras et al. 2022, Algorithm 2, `num_steps` steps), on the run's evaluation sets: what a perfect
    student of this teacher would score. For the exact teacher it measures the sampler's discretisation."""
    from full.eval.sampler import edm_sampler
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = ToyDistillation(dataclasses.replace(config, steps=1))
        net = run.teacher
        latents = torch.randn(config.eval_samples, run.target.dim,
                              generator=torch.Generator().manual_seed(30_000 + config.seed))
        with torch.no_grad():
            samples = edm_sampler(lambda x, s, c=None: net(x.float(), s.float()).double(), latents,
                                  num_steps=num_steps).float()
            return energy_distance(samples, run.eval_target).item()
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the document


def _finite(x: float) -> float | None:
    """x for JSON: None when it is not finite (JSON has no NaN or infinity)."""
    return x if x is not None and math.isfinite(x) else None


def _values(values: list) -> list[float]:
    """Per-seed values from the document: None (not finite) read back as infinity."""
    return [math.inf if v is None else v for v in values]


def _mean(values: list) -> float:
    values = _values(values)
    return sum(values) / len(values)


def _censored(steps: list[int | None], budget: int) -> list[int]:
    """Steps to threshold with 'never' counted as the run's budget (a lower bound on the true value)."""
    return [budget if s is None else s for s in steps]


def study_document(plan: StudyPlan, records: list[RunRecord], teacher_distances: dict | None = None,
                   wall_seconds: float | None = None) -> dict:
    """The study as a JSON-ready document: ``alphas``, ``seeds``, ``metric``, ``threshold``, ``summary`` and
    ``studies[name] = {axis, values, results: [{value, alpha, steps_to_threshold, final, ...}], ...}``.

    Per study, beside the required fields: ``floors`` and ``thresholds`` (one per value), ``steps`` (the
    budget), ``eval_steps`` and per-result ``curves`` (distance per evaluation and seed), ``diverged`` (per
    seed) and the base ``configs``; the teacher study adds ``teacher_distances``. Non-finite numbers are null.
    """
    by_cell = {(r.study, r.value, r.alpha, r.seed): r for r in records}
    studies = {}
    for name in STUDIES:
        settings = [s for s in plan.settings if s.study == name]
        if not settings:
            continue
        results = []
        for s in settings:
            for alpha in plan.alphas:
                cell = [by_cell[(name, s.value, alpha, seed)] for seed in plan.seeds]
                results.append({"value": s.value, "alpha": alpha,
                                "steps_to_threshold": [r.steps_to_threshold for r in cell],
                                "final": [_finite(r.final) for r in cell],
                                "diverged": [r.diverged for r in cell],
                                "curves": [[_finite(d) for d in r.distances] for r in cell]})
        first = [by_cell[(name, s.value, plan.alphas[0], plan.seeds[0])] for s in settings]
        studies[name] = {
            "axis": plan.axes.get(name, name), "values": [s.value for s in settings], "results": results,
            "floors": [r.floor for r in first], "thresholds": [r.threshold for r in first],
            "steps": [s.config.steps for s in settings], "eval_steps": [r.eval_steps for r in first],
            "configs": [dataclasses.asdict(dataclasses.replace(s.config, alpha=0.0, seed=0)) for s in settings],
        }
        if name == "teacher" and teacher_distances:
            studies[name]["teacher_distances"] = [teacher_distances.get(s.value) for s in settings]
    config = plan.settings[0].config
    doc = {
        "alphas": list(plan.alphas), "seeds": list(plan.seeds),
        "metric": (f"energy distance (V-statistic) between {config.eval_samples} generator samples and as many "
                   f"exact target samples, on fixed evaluation noise, every {config.eval_every} generator steps; "
                   f"'final' is the mean of the last {plan.final_evals} evaluations"),
        "threshold": (f"per setting: {plan.threshold_factor:g} x the floor, the energy distance between two "
                      "independent target sample sets of the same size (studies.*.floors, studies.*.thresholds)"),
        "threshold_factor": plan.threshold_factor,
        "studies": studies,
        "cpu_seconds": sum(r.cpu_seconds for r in records),
    }
    if wall_seconds is not None:
        doc["wall_seconds"] = wall_seconds
    doc["summary"] = summary_markdown(doc)
    return doc


def _se(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def compare(low: list, high: list) -> str:
    """'helps', 'hurts' or 'no clear difference' for `high` (alpha > 1) against `low` (alpha <= 1): per-seed
    values, paired by seed (a seed fixes the initial weights and the noise, whatever alpha), of a quantity where
    smaller is better. A difference counts when every seed moves the same way and the mean difference exceeds
    twice its standard error (with one seed: when it exceeds 10 %). A side with a non-finite run loses to a side
    without one."""
    low, high = _values(low), _values(high)
    bad_low, bad_high = not all(map(math.isfinite, low)), not all(map(math.isfinite, high))
    if bad_low or bad_high:
        return "no clear difference" if bad_low and bad_high else "hurts" if bad_high else "helps"
    diffs = [h - lo for lo, h in zip(low, high)]
    mean = _mean(diffs)
    if len(diffs) == 1:
        margin = 0.1 * abs(low[0])
        return "helps" if mean < -margin else "hurts" if mean > margin else "no clear difference"
    beyond_noise = abs(mean) > 2 * _se(diffs)
    if beyond_noise and all(d < 0 for d in diffs):
        return "helps"
    if beyond_noise and all(d > 0 for d in diffs):
        return "hurts"
    return "no clear difference"


def _fmt(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3g}"


def _steps_text(steps: list[int | None], budget: int) -> str:
    if all(s is None for s in steps):
        return "never"
    return (">=" if None in steps else "") + f"{_mean(_censored(steps, budget)):.0f}"


def verdicts(doc: dict) -> list[dict]:
    """Per (study, value): the best alpha <= 1 against the best alpha > 1 (by mean over seeds), on final
    distance and on steps to threshold, each with `compare`'s verdict."""
    out = []
    for name, study in doc["studies"].items():
        for i, value in enumerate(study["values"]):
            budget = study["steps"][i]
            cells = {r["alpha"]: r for r in study["results"] if r["value"] == value}
            lows, highs = [a for a in cells if a <= 1], [a for a in cells if a > 1]
            if not lows or not highs:
                continue
            quantities = {"final": lambda a: cells[a]["final"],
                          "steps": lambda a: _censored(cells[a]["steps_to_threshold"], budget)}
            entry = {"study": name, "value": value, "cells": cells, "budget": budget,
                     "threshold": study["thresholds"][i], "floor": study["floors"][i]}
            for key, get in quantities.items():
                low = min(lows, key=lambda a: _mean(get(a)))
                high = min(highs, key=lambda a: _mean(get(a)))
                entry[key] = (low, high, compare(get(low), get(high)))
            out.append(entry)
    return out


def _relative(cells: dict, low: float, high: float, key: Callable[[dict], list]) -> str:
    """The mean of alpha `high` relative to alpha `low`, as a signed percentage."""
    a, b = _mean(key(cells[low])), _mean(key(cells[high]))
    return f"{100 * (b - a) / a:+.0f} %" if math.isfinite(a) and math.isfinite(b) and a > 0 else "n/a"


def summary_markdown(doc: dict) -> str:
    """Where alpha > 1 helps and where it hurts, with the numbers, generated from the document's results.
    Settings that are the same runs (the base configuration appears in several studies) are tallied once."""
    found = verdicts(doc)
    distinct = {}
    for x in found:
        distinct.setdefault(json.dumps([c["curves"] for c in x["cells"].values()]), x)
    tally = lambda key: {v: sum(x[key][2] == v for x in distinct.values())                 # noqa: E731
                         for v in ("helps", "hurts", "no clear difference")}
    final, steps = tally("final"), tally("steps")
    lines = [f"Over {len(distinct)} distinct settings (seeds {doc['seeds']}; the base configuration appears in "
             f"{len(found) - len(distinct) + 1} studies and is counted once), the best alpha > 1 against the best "
             f"alpha <= 1: on the final distance alpha > 1 **helps in {final['helps']}**, **hurts in "
             f"{final['hurts']}** and makes no clear difference in {final['no clear difference']}; on the steps to "
             f"the threshold it helps in {steps['helps']}, hurts in {steps['hurts']} and makes no clear difference "
             f"in {steps['no clear difference']}. Runs are paired by seed (same initial weights and noise); a "
             "difference counts when every seed moves the same way and the mean difference exceeds twice its "
             "standard error, however small it is (the percentages give its size). Runs that never reach the "
             "threshold count as the budget.", ""]
    final_of = lambda c: c["final"]                                                    # noqa: E731
    for name, study in doc["studies"].items():
        lines.append(f"**{name}** ({study['axis']}):")
        for v in (x for x in found if x["study"] == name):
            cells = v["cells"]
            steps_of = lambda c: _censored(c["steps_to_threshold"], v["budget"])        # noqa: E731
            finals = ", ".join(f"{a:g}: {_fmt(_mean(c['final']))}" for a, c in cells.items())
            reach = ", ".join(f"{a:g}: {_steps_text(c['steps_to_threshold'], v['budget'])}" for a, c in cells.items())
            broken = ", ".join(f"alpha {a:g} in {sum(c['diverged'])} of {len(c['diverged'])} seeds"
                               for a, c in cells.items() if any(c["diverged"]))
            (lf, hf, vf), (ls, hs, vs) = v["final"], v["steps"]
            lines.append(
                f"- {name} = {v['value']}: alpha > 1 **{vf}** on the final distance (best alpha <= 1: {lf:g} at "
                f"{_fmt(_mean(cells[lf]['final']))}; best alpha > 1: {hf:g} at {_fmt(_mean(cells[hf]['final']))}, "
                f"{_relative(cells, lf, hf, final_of)}) and **{vs}** on the steps to {_fmt(v['threshold'])} "
                f"({ls:g} against {hs:g}, {_relative(cells, ls, hs, steps_of)}). Final distance by alpha: {finals}. "
                f"Steps to threshold by alpha: {reach}." + (f" Diverged: {broken}." if broken else ""))
        if study.get("teacher_distances"):
            parts = ", ".join(f"{value}: {_fmt(_mean(d))}"
                              for value, d in zip(study["values"], study["teacher_distances"]) if d)
            lines.append(f"- The teachers' own samples (EDM Heun sampler, 18 steps) are at distance {parts}.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def spread(values: list) -> str:
    """'mean (min-max)' of per-seed values."""
    values = _values(values)
    return f"{_fmt(_mean(values))} ({_fmt(min(values))}-{_fmt(max(values))})" if len(values) > 1 else _fmt(values[0])


def steps_spread(steps: list[int | None], budget: int) -> str:
    """Mean (min-max) of steps to threshold; 'never' runs count as the budget and mark the mean with '>='."""
    if all(s is None for s in steps):
        return "never"
    reached = [s for s in steps if s is not None]
    text = _steps_text(steps, budget)
    if len(steps) > 1:
        text += f" ({min(reached)}-{max(reached)}" + (f", {len(reached)}/{len(steps)} reached)" if None in steps
                                                        else ")")
    return text


def format_table(doc: dict) -> str:
    """A markdown table per study: alpha against steps to threshold and final distance, mean (min-max)."""
    out = [f"metric: {doc['metric']}", f"threshold: {doc['threshold']}", f"seeds: {doc['seeds']}", ""]
    for name, study in doc["studies"].items():
        out += [f"### {name}: {study['axis']}", "",
                "| value | floor | threshold | alpha | steps to threshold | final distance | diverged |",
                "|---|---|---|---|---|---|---|"]
        for i, value in enumerate(study["values"]):
            for r in (r for r in study["results"] if r["value"] == value):
                out.append(f"| {value} | {_fmt(study['floors'][i])} | {_fmt(study['thresholds'][i])} | {r['alpha']:g} "
                           f"| {steps_spread(r['steps_to_threshold'], study['steps'][i])} | {spread(r['final'])} "
                           f"| {sum(r.get('diverged', []))} |")
        out.append("")
    return "\n".join(out)


def plot(doc: dict, path: str | Path | None = None):
    """One column per study; top: steps to threshold against alpha, bottom: final distance against alpha;
    one line per axis value, mean over seeds with a min-max band. Runs that never reach the threshold
    count as the budget (dotted line); non-finite distances are left out. Returns the figure; saves it
    when `path` is given."""
    import matplotlib.pyplot as plt
    names = list(doc["studies"])
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 7.4), squeeze=False)
    for col, name in enumerate(names):
        study = doc["studies"][name]
        top, bottom = axes[0, col], axes[1, col]
        for i, value in enumerate(study["values"]):
            rows = [r for r in study["results"] if r["value"] == value]
            alphas = [r["alpha"] for r in rows]
            steps = [_censored(r["steps_to_threshold"], study["steps"][i]) for r in rows]
            finals = [[f for f in _values(r["final"]) if math.isfinite(f)] or [math.nan] for r in rows]
            line, = top.plot(alphas, [_mean(s) for s in steps], "o-", label=str(value), lw=1.5, ms=4)
            color = line.get_color()
            top.fill_between(alphas, [min(s) for s in steps], [max(s) for s in steps], color=color, alpha=0.15)
            bottom.plot(alphas, [_mean(f) for f in finals], "o-", color=color, label=str(value), lw=1.5, ms=4)
            bottom.fill_between(alphas, [min(f) for f in finals], [max(f) for f in finals], color=color, alpha=0.15)
            bottom.axhline(study["floors"][i], color=color, lw=0.7, ls=":")
        top.axhline(max(study["steps"]), color="gray", lw=0.8, ls=":")
        top.set(title=f"{name}: steps to threshold", xlabel="alpha", ylabel="generator steps (never = budget)")
        bottom.set(title=f"{name}: final energy distance (dotted: floors)", xlabel="alpha", ylabel="energy distance",
                   yscale="log")
        top.legend(title=name, fontsize=8)
        for ax in (top, bottom):
            ax.axvline(1.0, color="gray", lw=0.6, ls="--")
            ax.grid(alpha=0.3)
    fig.suptitle(f"SiD's alpha on toy distillation: mean over seeds {doc['seeds']}, band = min to max; "
                 f"threshold = {doc.get('threshold_factor', 10):g} x floor", fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def run_and_collect(plan: StudyPlan, workers: int = 1, progress=None, previous: Iterable[RunRecord] = (),
                    record_file: str | Path | None = None) -> dict:
    """Run the plan (`run_study`), measure the teachers' own distances, and return the JSON document.
    Each record is appended to `record_file` as it comes (`save_records`), so an interrupted study can go
    on with ``previous=load_records(record_file)``."""
    start = time.perf_counter()
    records = []
    for record in run_study(plan, workers=workers, progress=progress, previous=previous):
        records.append(record)
        if record_file is not None:
            save_records([record], record_file)
    distances = {}
    for s in plan.settings:
        if s.study == "teacher":
            distances[s.value] = [teacher_distance(dataclasses.replace(s.config, seed=seed)) for seed in plan.seeds]
    return study_document(plan, records, distances, wall_seconds=time.perf_counter() - start)


def write_outputs(doc: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``alpha_study.json`` and ``alpha_study.png`` into `out_dir`; returns both paths."""
    import matplotlib.pyplot as plt
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "alpha_study.json", out_dir / "alpha_study.png"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    plt.close(plot(doc, png_path))
    return json_path, png_path
