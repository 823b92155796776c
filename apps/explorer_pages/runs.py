"""Page 4: full-scale runs (log curves, grids over time), the shipped MNIST models, a short CPU distillation."""
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import streamlit as st

from apps.common import network, setup, show

setup()
st.title("Full-scale runs")

REPO = Path(__file__).resolve().parents[2]
runs = sorted(str(p.parent) for p in Path("runs").glob("*/log.jsonl") if (p.parent / "config.json").is_file())
run_dir = st.text_input("Run directory (holds config.json and log.jsonl)", runs[0] if runs else "runs/mnist16-cpu")
if runs:
    st.caption("Runs found under runs/: " + ", ".join(runs))


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


folder = Path(run_dir)
if (folder / "log.jsonl").is_file() and (folder / "config.json").is_file():
    log = read_log(folder / "log.jsonl")
    with st.expander("config.json"):
        st.json(json.loads((folder / "config.json").read_text()))
    last = log[-1]
    cols = st.columns(4)
    cols[0].metric("kimg", f"{last['kimg']:.1f}")
    cols[1].metric("sec/kimg", f"{last['sec_per_kimg']:.1f}")
    cols[2].metric("peak memory (GiB)", f"{last['peak_mem_gib']:.2f}")
    fids = [r for r in log if "fid" in r]
    cols[3].metric("latest FID", f"{fids[-1]['fid']:.2f}" if fids else "-")
    fig, axes = plt.subplots(1, 2 if fids else 1, figsize=(12 if fids else 6, 3.6), squeeze=False)
    kimg = [r["kimg"] for r in log]
    axes[0, 0].plot(kimg, [r["loss_fake"] for r in log], label="f_psi loss")
    twin = axes[0, 0].twinx()
    twin.plot(kimg, [r["loss_G"] for r in log], color="crimson", label="G loss")
    axes[0, 0].set(xlabel="kimg", ylabel="f_psi loss", title="losses (G loss: right axis)")
    if fids:
        axes[0, 1].semilogy([r["kimg"] for r in fids], [r["fid"] for r in fids], "o-")
        axes[0, 1].set(xlabel="kimg", ylabel="FID", title="FID against kimg")
    fig.tight_layout()
    show(fig)
    grids = sorted(folder.glob("grid-*.png"))
    if grids:
        index = st.slider("Sample grid (fixed seeds) over training", 0, len(grids) - 1, len(grids) - 1) \
            if len(grids) > 1 else 0
        st.image(str(grids[index]), caption=grids[index].name, width=420)
else:
    st.info(f"{run_dir} is not a SiD run directory (config.json and log.jsonl). "
            "Start a run with `python -m full.train --preset mnist16-cpu`.")

st.header("The shipped MNIST models: one step against the teacher's sampler")
teacher_path, generator_path = REPO / "assets/mnist16-teacher.json", REPO / "assets/mnist16-sid.json"
if teacher_path.is_file() and generator_path.is_file():
    n = st.slider("Images (the same seeds for both)", 8, 64, 32, 8)
    teacher_steps = st.slider("Teacher Heun steps (NFE = 2N - 1)", 1, 40, 18)
    if st.button("Generate"):
        from full.eval.sampling import sample_images
        from full.eval.images import grid, to_uint8
        seeds = list(range(n))
        for col, (label, path, steps) in zip(st.columns(2), [("SiD one step", generator_path, None),
                                                              (f"teacher, {2 * teacher_steps - 1} NFE", teacher_path,
                                                               teacher_steps)]):
            start = time.perf_counter()
            images = sample_images(network(str(path)), seeds, teacher_steps=steps)
            ms = 1000 * (time.perf_counter() - start) / n
            col.image(grid(to_uint8(images), 8), caption=f"{label}: {ms:.1f} ms/image", width=320,
                      clamp=True)
else:
    st.info("The shipped teacher or generator is missing: create them with `python -m full.train_teacher ...` "
            "and `python -m full.train --preset mnist16-cpu` (see the README).")

st.header("A short CPU distillation")
st.caption("Starts `python -m full.train --preset mnist16-cpu` for 0.0032 Mimg (100 iterations) in the background.")
state = st.session_state
if st.button("Start a short distillation"):
    outdir = f"runs/explorer-{time.strftime('%Y%m%d-%H%M%S')}"
    state.job = (subprocess.Popen([sys.executable, "-m", "full.train", "--preset", "mnist16-cpu", "--outdir", outdir,
                                   "--duration", "0.0032", "--threads", "1"], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), REPO / outdir)


@st.fragment(run_every=2.0 if "job" in st.session_state and st.session_state.job[0].poll() is None else None)
def progress() -> None:
    if "job" not in state:
        return
    job, outdir = state.job
    log = read_log(outdir / "log.jsonl") if (outdir / "log.jsonl").is_file() else []
    done = log[-1]["iteration"] if log else 0
    st.progress(min(done / 100, 1.0), text=f"{outdir.name}: {done}/100 iterations"
                + (f", FID {log[-1]['fid']:.1f}" if log and "fid" in log[-1] else ""))
    if job.poll() is not None:
        st.write("finished" if job.returncode == 0 else f"stopped with exit status {job.returncode}")


progress()
