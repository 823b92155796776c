"""Page 4: full-scale runs. The shipped example runs and any run under runs/ (curves of every logged term, sample
grids over training, FID against kimg for several runs on one plot), the shipped MNIST generator against its
teacher's sampler (ms/image and the speed-up), and a short CPU distillation followed iteration by iteration.

Runs are read only through `full.method.records` (`read_log` for ``log.jsonl``, `read_progress` for
``progress.json``). Extra folders of runs can be listed with SID_EXPLORER_RUNS (paths separated by os.pathsep).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import streamlit as st

from apps import plots
from apps.common import network, setup, show
from full.errors import SidError
from full.method.records import Tick, read_log, read_progress

REPO = Path(__file__).resolve().parents[2]
SHORT_RUN = ["--preset", "mnist16-cpu", "--duration", "0.0032", "--threads", "1"]  # 3.2 kimg = 100 iterations
REFRESH = 1.0

setup()
state = st.session_state


def run_roots() -> list[tuple[str, Path]]:
    """(label prefix, folder) of every place runs are listed from: the shipped examples, runs/, SID_EXPLORER_RUNS."""
    roots = [("assets/runs", REPO / "assets" / "runs"), ("runs", REPO / "runs")]
    if (Path.cwd() / "runs").resolve() != (REPO / "runs").resolve():
        roots.append(("./runs", Path.cwd() / "runs"))
    for extra in filter(None, os.environ.get("SID_EXPLORER_RUNS", "").split(os.pathsep)):
        roots.append((extra, Path(extra)))
    return roots


def find_runs() -> dict[str, Path]:
    """label -> run directory (one holding log.jsonl), the shipped examples first, then the newest first."""
    found = {}
    for prefix, root in run_roots():
        if root.is_dir():
            runs = sorted((p.parent for p in root.glob("*/log.jsonl")), key=lambda p: p.stat().st_mtime, reverse=True)
            found.update({f"{prefix}/{run.name}": run for run in runs})
    return found


@st.cache_data(show_spinner=False)
def load_run(folder: str, stamp: tuple) -> tuple[list[Tick], dict, list[tuple[float, str]], str | None]:
    """Ticks, config and grids (kimg, path) of a run; `stamp` (sizes and mtimes) invalidates the cache."""
    path = Path(folder)
    error = None
    try:
        ticks = read_log(path / "log.jsonl")
    except SidError as e:
        ticks, error = [], str(e)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    grids = []
    for grid in path.glob("grid-*.png"):
        try:
            grids.append((float(grid.stem[len("grid-"):]), str(grid)))
        except ValueError:
            continue
    return ticks, config, sorted(grids), error


def run_stamp(folder: Path) -> tuple:
    files = [folder / "log.jsonl", folder / "config.json", *folder.glob("grid-*.png")]
    return tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file()))


def run_data(folder: Path):
    return load_run(str(folder), run_stamp(folder))


def objective_name(config: dict) -> str:
    name = config.get("objective", "sid")
    return {"sid": f"SiD, alpha={config.get('alpha', 1.2):g}", "sida": f"SiDA, alpha={config.get('alpha', 1.2):g}"}.get(
        name, name)


def fid_points(ticks: list[Tick]) -> tuple[list[float], list[float]]:
    rows = [(t.kimg, t.metrics["fid"]) for t in ticks if "fid" in t.metrics]
    return [k for k, _ in rows], [f for _, f in rows]


st.title("Full-scale runs")
if "runs_pending_select" in state:  # a run the short distillation just wrote: select it before the widget exists
    state["runs_run"] = state.pop("runs_pending_select")
runs = find_runs()

# --------------------------------------------------------------------------- one run
st.header("A run: its losses and samples over training")
if not runs:
    st.info("No runs found. The shipped examples live in `assets/runs/`; your own runs in `runs/` appear here "
            "as they train: `python -m full.train --preset mnist16-cpu` (or the short distillation below).")
labels = list(runs)
if labels and state.get("runs_run") not in labels:
    state["runs_run"] = labels[0]
choice = st.selectbox("Run", labels, key="runs_run", help="shipped examples (assets/runs) and runs under runs/") \
    if labels else None
other = st.text_input("Or another run directory (holds log.jsonl)", key="runs_other", placeholder="path/to/run")
folder = Path(other) if other.strip() else (runs[choice] if choice else None)

if folder is not None and not (folder / "log.jsonl").is_file():
    st.warning(f"`{folder}` has no log.jsonl: it is not a SiD run directory.")
elif folder is not None:
    ticks, config, grids, error = run_data(folder)
    st.caption(f"`{folder.resolve()}` · {objective_name(config)} · preset {config.get('preset', '?')}")
    if error:
        st.warning(f"{error} (logs written before the typed records cannot be read.)")
    with st.expander("config.json"):
        st.json(config)
    if ticks:
        last = ticks[-1]
        fid_kimg, fids = fid_points(ticks)
        cols = st.columns(6)
        cols[0].metric("kimg", f"{last.kimg:.1f}")
        cols[1].metric("iterations", f"{last.iteration}")
        cols[2].metric("sec/iter", f"{last.sec_per_iter:.2f}")
        cols[3].metric("sec/kimg", f"{last.sec_per_kimg:.1f}")
        cols[4].metric("peak memory (GiB)", f"{last.peak_mem_gib:.2f}")
        cols[5].metric("latest FID", f"{fids[-1]:.2f}" if fids else "-",
                       help=f"best {min(fids):.2f} at {fid_kimg[int(np.argmin(fids))]:g} kimg" if fids else None)
        panels = plots.loss_panels(ticks)
        if panels:
            rows = (len(panels) + 2) // 3
            show(partial(plots.run_losses, kimg=np.array([t.kimg for t in ticks]), panels=panels,
                         alpha=config.get("alpha")), figsize=(13, 3.3 * rows),
                 caption="Each logged term on its own axis: f_psi's denoising loss, L1 and L2 apart, their SiD "
                         "combination L2 - alpha L1 (the G loss), and for SiDA the discriminator and GAN terms.")
        if last.nan_samples or last.nonfinite_grads:
            st.warning(f"Last tick: {last.nan_samples} non-finite samples dropped, {last.nonfinite_grads} non-finite "
                       "gradient entries zeroed.")
    else:
        st.info("No tick logged yet.")
    if grids:
        kimgs = [k for k, _ in grids]
        shown = st.select_slider("Sample grid over training (fixed seeds)", kimgs, value=kimgs[-1],
                                 format_func=lambda k: f"{k:g} kimg", key=f"runs_grid_{folder}")
        path = dict(grids)[shown]
        st.image(path, caption=f"G_ema after {shown:g} kimg ({Path(path).name})", width=420)

# --------------------------------------------------------------------------- FID of several runs
with_fid = {label: path for label, path in runs.items() if fid_points(run_data(path)[0])[0]}
if with_fid:
    st.header("FID against kimg, several runs")
    picked = st.multiselect("Runs", list(with_fid), default=list(with_fid), key="runs_fid")
    if picked:
        curves = []
        for label in picked:
            ticks, config, _, _ = run_data(with_fid[label])
            curves.append((f"{label} ({objective_name(config)})", *fid_points(ticks)))
        reference = []
        mnist = REPO / "docs" / "mnist.json"
        if mnist.is_file():
            rows = {r["model"]: r for r in json.loads(mnist.read_text()).get("rows", [])}
            if "teacher Heun 35 NFE" in rows:
                reference.append(("MNIST teacher, Heun 35 NFE", rows["teacher Heun 35 NFE"]["fid_mnist"]))
        show(partial(plots.fid_curves, runs=curves, reference=reference), figsize=(9, 4.2))

# --------------------------------------------------------------------------- one step against the teacher
st.header("The shipped MNIST models: one step against the teacher's sampler")
teacher_path, generator_path = REPO / "assets/mnist16-teacher.json", REPO / "assets/mnist16-sid2a.json"
if teacher_path.is_file() and generator_path.is_file():
    n = st.slider("Images (the same seeds for both)", 8, 64, 16, 8, key="runs_n")
    teacher_steps = st.slider("Teacher Heun steps (NFE = 2N - 1)", 1, 40, 18, key="runs_teacher_steps")
    if st.button("Generate", key="runs_generate"):
        import torch

        from full.eval.images import grid, to_uint8
        from full.eval.sampling import sample_images
        seeds, results = list(range(n)), []
        for label, path, steps in [("SiD²A one step", generator_path, None),
                                   (f"teacher, {2 * teacher_steps - 1} NFE", teacher_path, teacher_steps)]:
            net = network(str(path))  # loaded (once per process) outside the timing
            start = time.perf_counter()
            with torch.no_grad():
                images = sample_images(net, seeds, teacher_steps=steps)
            ms = 1000 * (time.perf_counter() - start) / n
            results.append((label, grid(to_uint8(images), 8), ms))
        state["runs_generated"] = {"n": n, "teacher_steps": teacher_steps, "results": results}
    generated = state.get("runs_generated")
    if generated:  # kept in the session: touching another control does not remove it
        (one_label, _, one_ms), (teacher_label, _, teacher_ms) = generated["results"]
        cols = st.columns(3)
        cols[0].metric("SiD²A one step", f"{one_ms:.1f} ms/image")
        cols[1].metric(teacher_label[0].upper() + teacher_label[1:], f"{teacher_ms:.1f} ms/image")
        cols[2].metric("speed-up of one step", f"{teacher_ms / one_ms:.1f}x",
                       help="teacher ms/image divided by one-step ms/image, measured now on this server "
                            "(one CPU thread per session)")
        for col, (label, image, ms) in zip(st.columns(2), generated["results"]):
            col.image(image, caption=f"{label}: {ms:.1f} ms/image", width=320, clamp=True)
        if (generated["n"], generated["teacher_steps"]) != (n, teacher_steps):
            st.caption(f"Generated with {generated['n']} images and {generated['teacher_steps']} teacher steps; "
                       "press Generate for the current settings.")
else:
    st.info("The shipped teacher or generator is missing: create them with `python -m full.train_teacher ...` "
            "and `python -m full.train --preset mnist16-cpu` (see the README).")


# --------------------------------------------------------------------------- a short distillation
@dataclass
class Job:
    """A short distillation started from this page: its process, run directory and error log."""
    process: subprocess.Popen
    outdir: Path
    stderr: Path


st.header("A short CPU distillation")
st.caption("Starts `python -m full.train " + " ".join(SHORT_RUN) + " --outdir runs/explorer-<time>` in the background "
           "(100 iterations at batch 32, about a minute per 50 iterations on one thread).")
job: Job | None = state.get("runs_job")
busy = job is not None and job.process.poll() is None
if st.button("Start a short distillation", key="runs_start_job", disabled=busy):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = REPO / "runs" / f"explorer-{stamp}"
    errors = Path(tempfile.gettempdir()) / f"sid-explorer-{stamp}-{os.getpid()}.log"
    with errors.open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "full.train", *SHORT_RUN, "--outdir", str(outdir)],
                                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    state["runs_job"] = job = Job(process, outdir, errors)
    busy = True


@st.fragment(run_every=REFRESH if busy else None)
def job_progress() -> None:
    job: Job | None = state.get("runs_job")
    if job is None:
        return
    returncode = job.process.poll()
    try:
        progress = read_progress(job.outdir / "progress.json")
    except (ValueError, TypeError):  # caught mid-write: the next refresh reads it whole
        progress = None
    if progress is not None:
        text = (f"{job.outdir.name}: iteration {progress.iteration}/{progress.total_iterations}, {progress.kimg:.2f} kimg, "
                f"{progress.seconds:.0f} s")
        st.progress(min(progress.iteration / max(progress.total_iterations, 1), 1.0), text=text)
    elif returncode is None:
        st.progress(0.0, text=f"{job.outdir.name}: loading the teacher ...")
    if returncode is None:
        return
    if returncode == 0:
        label = next((label for label, path in find_runs().items() if path.resolve() == job.outdir.resolve()), None)
        st.success(f"Finished: the run was written to `{job.outdir}`" +
                   (f" and is shown above as **{label}**." if label else "."))
        if label and state.get("runs_job_shown") != str(job.outdir):
            state["runs_job_shown"] = str(job.outdir)
            state["runs_pending_select"] = label
            st.rerun()  # show the new run (and stop this refresh) without a reload
    else:
        tail = job.stderr.read_text()[-1500:] if job.stderr.is_file() else ""
        st.error(f"The distillation stopped with exit status {returncode}; its run directory is `{job.outdir}`.")
        if tail:
            st.code(tail)


job_progress()
