"""What a training run yields and logs: typed records, the one schema of ``log.jsonl`` and ``progress.json``.

The training loop is a generator of these records; the writers, the command line's progress bar, the explorer
and the notebooks consume them, and read the files back through the same types (`read_log`, `read_progress`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from full.errors import SidError


@dataclass
class Progress:
    """After every iteration: where the run is (written to ``progress.json``)."""
    iteration: int                  # iterations done
    total_iterations: int           # iterations of the whole run
    kimg: float                     # thousands of generator images seen
    seconds: float                  # wall time of this process since the run started or resumed

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Tick:
    """Every `tick` kimg: per-tick means of each named loss term, cost, and non-finite counts (``log.jsonl``).

    `fake` holds the terms of the f_psi objective (``loss``; with SiDA also ``denoise``, ``discriminator``,
    ``bce_real``, ``bce_fake``, ``accuracy_real``, ``accuracy_fake``), `generator` those of G's objective
    (``loss``; for SiD also ``L1`` and ``L2``; for SiDA ``sid`` and ``gan``), each a mean over the tick's
    samples. `metrics` holds the FID (and others) when they were computed at this tick.
    """
    tick: int                       # ticks done
    kimg: float                     # thousands of generator images seen
    iteration: int                  # iterations done
    seconds: float                  # wall time since the run started (over resumes)
    sec_per_iter: float             # mean wall time of this tick's iterations
    sec_per_kimg: float             # the same per thousand images
    peak_mem_gib: float             # peak GPU memory allocated, or peak RSS on the CPU
    fake: dict[str, float] = field(default_factory=dict)
    generator: dict[str, float] = field(default_factory=dict)
    nan_samples: int = 0            # samples dropped because a term was not finite (both steps)
    nonfinite_grads: int = 0        # gradient entries that were not finite and were zeroed (both steps)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> "Tick":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def read_log(path: str | os.PathLike) -> list[Tick]:
    """The ticks of a ``log.jsonl``. A torn last line (a crash while appending) is skipped; a broken line
    before it means the file is not a log of ours."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    ticks = []
    for number, line in enumerate(lines, 1):
        try:
            ticks.append(Tick.from_json(json.loads(line)))
        except (ValueError, TypeError):
            if number == len(lines):
                break
            raise SidError(f"{path}: line {number} is not a tick record; is this the log.jsonl of a sid run?") from None
    return ticks


def read_progress(path: str | os.PathLike) -> Progress | None:
    """The ``progress.json`` of a run, or None if there is none (yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return Progress(**json.load(f))
    except FileNotFoundError:
        return None
