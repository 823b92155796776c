"""Distil an EDM teacher into a one-step generator with SiD.

    python -m full.train --preset cifar10-uncond --teacher edm-cifar10-32x32-uncond-vp.pkl --outdir runs/c10
    torchrun --nproc_per_node 4 -m full.train --preset cifar10-uncond --outdir runs/c10
    python -m full.train --preset mnist16-cpu --outdir runs/mnist      # real distillation on a CPU
    python -m full.train --preset ffhq64 --dry-run                     # print the resolved config

The run directory holds config.json, log.jsonl (one line per tick), sample grids of G_ema on fixed
seeds (grid-KIMG.png), G_ema snapshots (network-snapshot-KIMG.safetensors/.json, loadable by
full.generate) and the last --keep training states (training-state-KIMG.pt, written atomically).
Running the same command again resumes from the newest state (--resume auto). Ctrl-C finishes the
current iteration and saves a state before exiting (a second Ctrl-C stops at once, without saving).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import resource
import signal
import sys
import threading
import time

import torch
from tqdm import tqdm

from full import distributed
from full.cli import ArgumentParser, USER_ERRORS, report_error
from full.errors import SidError
from full.options import add_options, overrides
from full.method.presets import PRESETS, SiDConfig, resolve

STATE_GLOB = "training-state-*.pt"


# ---------------------------------------------------------------------------------------- interruption


class StopOnInterrupt:
    """Ctrl-C (SIGINT) becomes a request honoured between iterations, so a saved state never holds half an
    iteration (f_psi stepped, G not). A second Ctrl-C interrupts at once, without saving. Signals can only
    be caught on the main thread; elsewhere (Streamlit scripts) Ctrl-C keeps its usual meaning."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------------------------------- run directory


def atomic_torch_save(obj, path: str) -> None:
    from full.store.atomic import atomic_write
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def newest_state(outdir: str) -> str | None:
    states = sorted(glob.glob(os.path.join(outdir, STATE_GLOB)))
    return states[-1] if states else None


def load_state(path: str) -> dict:
    """Read a training state safely (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise SidError(f"cannot read training state {path} ({type(error).__name__}); delete it to resume from "
                       f"an older state, or use a new --outdir") from None


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def check_writable(outdir: str) -> None:
    try:
        os.makedirs(outdir, exist_ok=True)
        probe = os.path.join(outdir, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as error:
        raise SidError(f"cannot write to --outdir {outdir}: {error.strerror}; choose a writable directory") from None


def load_teacher(config: SiDConfig, device: torch.device) -> torch.nn.Module:
    """Load the teacher (path or URL), and check it against the preset's resolution and label count."""
    from full.store.network_file import load_network
    from full.store.download import fetch
    if not config.teacher:
        raise SidError("no teacher given; pass --teacher PATH_OR_URL (an EDM .pkl or our .safetensors/.json)")
    if not fetch(config.teacher).exists() and not os.path.exists(config.teacher + ".json"):
        raise SidError(f"teacher file not found: {config.teacher}; pass --teacher with an existing path or a URL")
    teacher = load_network(config.teacher, device=device)
    if config.resolution is not None and teacher.img_resolution != config.resolution:
        raise SidError(f"the teacher is {teacher.img_resolution}x{teacher.img_resolution} but the preset expects "
                       f"{config.resolution}x{config.resolution}; use the matching preset or --resolution")
    if config.label_dim is not None and teacher.label_dim != config.label_dim:
        raise SidError(f"the teacher has {teacher.label_dim} class labels but the preset expects {config.label_dim}; "
                       f"use the matching preset or --label-dim")
    return teacher


# ---------------------------------------------------------------------------------------- the run


class Run:
    """A SiD run in a directory: logging, grids, snapshots and training states around `SiDTrainer`."""

    def __init__(self, config: SiDConfig, outdir: str, preset: str | None, resume: str):
        from full.method.sid import SiDTrainer
        self.config, self.outdir, self.preset = config, outdir, preset
        self.ranks = distributed.init(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.ranks.is_main:
            check_writable(outdir)
        teacher = load_teacher(config, self.ranks.device)
        self.trainer = SiDTrainer(config, teacher, self.ranks)
        if config.labels_from:
            from full.store.dataset_zip import label_sampler
            self.trainer.label_source = label_sampler(config.labels_from, teacher.label_dim)
        state_path = newest_state(outdir) if resume == "auto" else (resume if resume != "none" else None)
        if state_path:
            if not os.path.exists(state_path):
                raise SidError(f"--resume {resume}: no such training state")
            self.trainer.load_state_dict(load_state(state_path))
            self.log(f"resumed from {state_path} at {self.trainer.nimg / 1000:.1f} kimg")
        self.total_iterations = math.ceil(config.duration * 1e6 / config.batch)
        self.tick_iterations = max(1, round(config.tick * 1000 / config.batch))
        if self.ranks.is_main:
            with open(os.path.join(outdir, "config.json"), "w") as f:
                json.dump({"preset": preset, **dataclasses.asdict(config), "world_size": self.ranks.world,
                           "precision_in_use": str(self.trainer.dtype)}, f, indent=2)

    def log(self, message: str) -> None:
        if self.ranks.is_main:
            tqdm.write(message)

    @property
    def kimg_tag(self) -> str:
        return f"{self.trainer.nimg / 1000:010.3f}"

    def save_grid(self) -> None:
        from full.eval.sampling import sample_images
        from full.eval.images import enlarge, grid, save_png, to_uint8
        images = sample_images(self.trainer.G_ema, list(range(self.config.grid)), sigma_init=self.config.sigma_init)
        save_png(grid(enlarge(to_uint8(images))), os.path.join(self.outdir, f"grid-{self.kimg_tag}.png"))

    def save_snapshot(self) -> None:
        from full.store.network_file import save_network
        save_network(self.trainer.G_ema, os.path.join(self.outdir, f"network-snapshot-{self.kimg_tag}"), provenance={
            "kind": "sid-generator", "preset": self.preset, "kimg": self.trainer.nimg / 1000,
            "sigma_init": self.config.sigma_init, "alpha": self.config.alpha, "teacher": self.config.teacher})

    def save_state(self) -> None:
        if not self.ranks.is_main:
            return
        atomic_torch_save(self.trainer.state_dict(), os.path.join(self.outdir, f"training-state-{self.kimg_tag}.pt"))
        for old in sorted(glob.glob(os.path.join(self.outdir, STATE_GLOB)))[:-self.config.keep]:
            os.unlink(old)

    def evaluate(self) -> dict:
        from full.eval.measure import generator_fid
        return {"fid": generator_fid(self.trainer.G_ema, self.config)}

    def artefacts(self, tick: int, final: bool) -> None:
        """Snapshot + grid every `snap` ticks, state every `state_every` ticks, and both at the end."""
        if not self.ranks.is_main:
            return
        if final or tick % self.config.snap == 0:
            self.save_grid()
            self.save_snapshot()
        if (final or tick % self.config.state_every == 0) and tick > 0:
            self.save_state()

    def stop_agreed(self, requested: bool) -> bool:
        """Whether any rank was asked to stop, so that every rank stops after the same iteration."""
        if self.ranks.world == 1:
            return requested
        flag = torch.tensor([float(requested)], device=self.ranks.device)
        return distributed.all_reduce_sum(flag, self.ranks).item() > 0

    def __iter__(self):
        """Train to the end, yielding each tick's log record."""
        t = self.trainer
        tick = t.iteration // self.tick_iterations
        if t.iteration == 0:
            self.artefacts(0, final=False)
        acc = {"fake": 0.0, "gen": 0.0, "nan": 0, "bad": 0, "n": 0}
        tick_start = time.perf_counter()
        with StopOnInterrupt() as stop:
            bar = tqdm(total=self.total_iterations * self.config.batch, initial=t.nimg, unit="img", unit_scale=True,
                       disable=not self.ranks.is_main, dynamic_ncols=True)
            while t.iteration < self.total_iterations:
                stats = t.iteration_step()
                for key, value in (("fake", stats.fake_loss), ("gen", stats.generator_loss),
                                   ("nan", stats.nan_samples), ("bad", stats.nonfinite_grads), ("n", 1)):
                    acc[key] += value
                bar.update(self.config.batch)
                bar.set_postfix(kimg=f"{t.nimg / 1000:.1f}", loss_G=f"{stats.generator_loss:.3g}",
                                loss_psi=f"{stats.fake_loss:.3g}")
                final = t.iteration == self.total_iterations
                if t.iteration % self.tick_iterations == 0 or final:
                    tick += 1
                    seconds = time.perf_counter() - tick_start
                    record = {"tick": tick, "kimg": t.nimg / 1000, "iteration": t.iteration,
                              "loss_fake": acc["fake"] / acc["n"], "loss_G": acc["gen"] / acc["n"],
                              "sec_per_iter": seconds / acc["n"],
                              "sec_per_kimg": seconds / (acc["n"] * self.config.batch / 1000),
                              "peak_mem_gib": peak_memory_gib(self.ranks.device),
                              "nan_samples": acc["nan"], "nonfinite_grads": acc["bad"]}
                    if self.ranks.is_main and self.config.metric_every and (tick % self.config.metric_every == 0 or final):
                        record.update(self.evaluate())
                    self.artefacts(tick, final)
                    if self.ranks.is_main:
                        with open(os.path.join(self.outdir, "log.jsonl"), "a") as f:
                            f.write(json.dumps(record) + "\n")
                    yield record
                    acc = {k: 0 for k in acc}
                    tick_start = time.perf_counter()
                if self.stop_agreed(stop.requested):
                    bar.close()
                    self.log(f"interrupted: saving a training state at {t.nimg / 1000:.3f} kimg")
                    self.save_state()
                    raise KeyboardInterrupt
        bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m full.train", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--preset", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--outdir", default=None, help="run directory (default: runs/<preset>)")
    parser.add_argument("--resume", default="auto", help="auto (newest state in --outdir), none, or a state path")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    add_options(parser.add_argument_group("config (overrides the preset)"), SiDConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = resolve(args.preset, overrides(args, SiDConfig))
        if args.dry_run:
            print(json.dumps({"preset": args.preset, **dataclasses.asdict(config)}, indent=2))
            return 0
        outdir = args.outdir or os.path.join("runs", args.preset or "sid")
        for record in Run(config, outdir, args.preset, args.resume):
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        distributed.shutdown()
        return 0
    except USER_ERRORS as error:
        return report_error(error)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
