"""The training loop: iterations grouped into ticks, as a generator of typed records. It only yields.

`training_loop` runs `SiDTrainer.iteration_step()` until the run's length, yielding a `Progress` after every
iteration and a `Tick` (per-tick means of every named loss term, cost, non-finite counts) at the end of every
tick. Whoever consumes it decides what to write (`full.train.Run`: log, grids, snapshots, states, FID), what to
show (the command line's progress bar, the explorer, a notebook), and when to stop (``should_stop``, checked
between iterations so a stop never splits an iteration).
"""
from __future__ import annotations

import resource
import time
from typing import Callable, Iterator

import torch

from full.errors import SidError
from full.method.records import Progress, Tick
from full.method.sid import IterationStats, SiDTrainer, StepStats


class Diverged(SidError):
    """Every sample was dropped as non-finite for too many consecutive iterations."""


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated on `device`, or this process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


class _TickSums:
    """Running sums of one tick's step statistics."""

    def __init__(self):
        self.steps = {"fake": [], "generator": []}
        self.iterations = 0

    def add(self, stats: IterationStats) -> None:
        self.iterations += 1
        self.steps["fake"].append(stats.fake)
        if stats.generator is not None:
            self.steps["generator"].append(stats.generator)

    def means(self, phase: str) -> dict[str, float]:
        steps: list[StepStats] = self.steps[phase]
        kept = sum(s.kept for s in steps)
        names = {name for s in steps for name in s.sums}
        return {name: sum(s.sums.get(name, 0.0) for s in steps) / kept for name in sorted(names)} if kept else {}

    def count(self, field: str) -> int:
        return sum(getattr(s, field) for steps in self.steps.values() for s in steps)


def training_loop(trainer: SiDTrainer, total_iterations: int, tick_iterations: int, *,
                  should_stop: Callable[[], bool] = lambda: False, nan_patience: int = 100,
                  seconds: float = 0.0) -> Iterator[Progress | Tick]:
    """Train until `total_iterations`, yielding `Progress` every iteration and `Tick` every `tick_iterations`
    (and after the last). `seconds` is the wall time of earlier sessions of this run (resume). Stops early,
    between iterations, when `should_stop()` is true. Raises `Diverged` after `nan_patience` consecutive
    iterations in which every sample of a step was dropped."""
    sums, tick = _TickSums(), trainer.iteration // tick_iterations
    session_start = tick_start = time.perf_counter()
    streak = 0
    while trainer.iteration < total_iterations:
        stats = trainer.iteration_step()
        sums.add(stats)
        lost = stats.fake.kept == 0 or (stats.generator is not None and stats.generator.kept == 0)
        streak = streak + 1 if lost else 0
        if streak >= nan_patience:
            raise Diverged(f"every sample of a step was non-finite for {streak} consecutive iterations (up to "
                           f"{trainer.nimg / 1000:.3f} kimg): the run has diverged; resume an earlier training state "
                           f"with a lower learning rate or --precision fp32 (this stop: --nan-patience {nan_patience})")
        now = time.perf_counter()
        yield Progress(trainer.iteration, total_iterations, trainer.nimg / 1000, seconds + now - session_start)
        if trainer.iteration % tick_iterations == 0 or trainer.iteration == total_iterations:
            tick += 1
            elapsed = now - tick_start
            yield Tick(tick=tick, kimg=trainer.nimg / 1000, iteration=trainer.iteration,
                       seconds=seconds + now - session_start, sec_per_iter=elapsed / sums.iterations,
                       sec_per_kimg=elapsed / (sums.iterations * trainer.config.batch / 1000),
                       peak_mem_gib=peak_memory_gib(trainer.device), fake=sums.means("fake"),
                       generator=sums.means("generator"), nan_samples=sums.count("dropped"),
                       nonfinite_grads=sums.count("nonfinite_grads"))
            sums, tick_start = _TickSums(), time.perf_counter()
        if should_stop():
            return
