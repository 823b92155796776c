"""Images from seeds: per-seed latents, labels and sampler noise (EDM's convention), one step of G or the
teacher's sampler (`sample_images`, in the network's space; `sample_pixels`, decoded to uint8 pixels, through the
VAE for EDM2's latent networks), and seed lists that are never built in memory.

Every image is a function of its seed alone: a `torch.Generator` on the device, seeded with the seed, draws the
latent [C, R, R], then the class label, then (stochastic samplers only) the churn noise of every step, as
NVlabs/edm ``generate.py`` does with its ``StackedRandomGenerator``. So the output does not depend on the batch
size or on how torchrun shards the seeds over ranks. CPU and CUDA generators give different numbers.
"""
from __future__ import annotations

import bisect
import re
from typing import Iterator, Sequence

import torch

from full.errors import ConfigError
from full.method.generator import SIGMA_INIT, one_step

MAX_SEED = 2 ** 32 - 1      # seeds seed a torch.Generator; EDM's seeds are 32-bit too
MAX_SEED_COUNT = 10_000_000  # a larger --seeds is refused as a mistake (EDM's FID protocol uses 50,000)


# ------------------------------------------------------------------------------------------------ seeds


class Seeds(Sequence[int]):
    """An ascending set of seeds held as disjoint inclusive ranges [(lo, hi), ...]: length, indexing, slicing
    into batches and sharding over ranks all work without listing the seeds."""

    def __init__(self, ranges: Sequence[tuple[int, int]]):
        self.ranges = tuple((int(lo), int(hi)) for lo, hi in ranges)
        self._starts, total = [], 0
        for lo, hi in self.ranges:
            self._starts.append(total)
            total += hi - lo + 1
        self._len = total

    @classmethod
    def span(cls, start: int, count: int) -> "Seeds":
        """`count` seeds from `start`: start, start + 1, ..., start + count - 1."""
        return cls([(start, start + count - 1)] if count > 0 else [])

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._len)
            if step != 1:
                raise ValueError("Seeds slices take no step")
            return self._slice(start, max(start, stop))
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"seed index {i} of {self._len}")
        k = bisect.bisect_right(self._starts, i) - 1
        return self.ranges[k][0] + i - self._starts[k]

    def _slice(self, start: int, stop: int) -> "Seeds":
        """The seeds at positions [start, stop), still as ranges."""
        out = []
        for (lo, hi), first in zip(self.ranges, self._starts):
            a, b = max(start, first), min(stop, first + hi - lo + 1)
            if a < b:
                out.append((lo + a - first, lo + b - 1 - first))
        return Seeds(out)

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __eq__(self, other) -> bool:
        return isinstance(other, Seeds) and self.ranges == other.ranges

    def __repr__(self) -> str:
        return f"Seeds({format_seeds(self)!r})"

    def shard(self, rank: int, world: int) -> "Seeds":
        """Rank `rank`'s contiguous share of `world` near-equal parts (in order, so shards concatenate)."""
        return self._slice(rank * self._len // world, (rank + 1) * self._len // world)

    def batches(self, size: int) -> Iterator[list[int]]:
        """The seeds as lists of at most `size`, in order."""
        if size < 1:
            raise ValueError(f"batch size must be positive, got {size}")
        for start in range(0, self._len, size):
            yield list(self._slice(start, start + size))


def format_seeds(seeds: Seeds) -> str:
    """'0-49999' or '1,5,10-12' (the syntax `parse_seeds` reads)."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in seeds.ranges)


_PART = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def parse_seeds(text: str, option: str = "--seeds", limit: int = MAX_SEED_COUNT) -> Seeds:
    """'0-49999' or '1,5,10-12' -> `Seeds`, sorted; `ConfigError` for anything else: negative or backward
    ranges, seeds above 2^32 - 1, a seed given twice, or more than `limit` seeds."""
    ranges = []
    for part in text.split(","):
        match = _PART.fullmatch(part)
        if not match:
            raise ConfigError(f"{option} {text!r}: cannot read {part.strip()!r}; write seeds like 0-49999 or "
                              f"1,5,10-12 (non-negative integers)")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"{option} {text!r}: the range {lo}-{hi} runs backwards; write {hi}-{lo}")
        if hi > MAX_SEED:
            raise ConfigError(f"{option} {text!r}: seed {hi} is above {MAX_SEED} (2^32 - 1), the largest seed")
        ranges.append((lo, hi))
    ranges.sort()
    for (lo1, hi1), (lo2, _) in zip(ranges, ranges[1:]):
        if lo2 <= hi1:
            raise ConfigError(f"{option} {text!r}: seed {lo2} is given twice; each seed names one image")
    seeds = Seeds(ranges)
    if len(seeds) > limit:
        raise ConfigError(f"{option} {text!r}: {text} names {len(seeds):,} images, more than the {limit:,} one "
                          f"run may make; split the seeds over several runs")
    return seeds


# ------------------------------------------------------------------------------------------------ images


def seed_generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One generator per seed, on `device`, seeded with the seed (mod 2^32)."""
    return [torch.Generator(device).manual_seed(int(seed) % (1 << 32)) for seed in seeds]


def seed_latents(seeds: Sequence[int], img_shape: tuple[int, int, int], label_dim: int, device: torch.device,
                 class_idx: int | None = None, generators: list[torch.Generator] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-seed latents and one-hot labels: latent first, then the label, from the seed's own generator
    (`generators`, which then continue to the sampler's noise, or fresh ones)."""
    generators = seed_generators(seeds, device) if generators is None else generators
    z, idx = [], []
    for g in generators:
        z.append(torch.randn(img_shape, generator=g, device=device))
        if label_dim:
            idx.append(torch.randint(label_dim, (1,), generator=g, device=device))
    if not label_dim:
        return torch.stack(z), None
    labels = torch.cat(idx) if class_idx is None else torch.full((len(generators),), class_idx, device=device)
    return torch.stack(z), torch.nn.functional.one_hot(labels, label_dim).float()


def sample_images(net: torch.nn.Module, seeds: Sequence[int], *, sampler=None, teacher_steps: int | None = None,
                  class_idx: int | None = None, sigma_init: float | None = None) -> torch.Tensor:
    """Images in [-1, 1] for `seeds`: one step of a generator G, or a teacher through EDM's sampler.

    The teacher is sampled when `sampler` (a `full.eval.sampler.SamplerConfig`, or the name of one of
    `SAMPLER_PRESETS`) or `teacher_steps` is given; `teacher_steps` overrides the sampler's step count (alone,
    it means EDM's deterministic sampler with that many steps). Churn noise comes from each seed's generator.
    """
    from full.eval.sampler import SamplerConfig, sampler_config
    device = next(net.parameters()).device
    shape = (net.img_channels, net.img_resolution, net.img_resolution)
    generators = seed_generators(seeds, device)
    z, labels = seed_latents(seeds, shape, net.label_dim, device, class_idx, generators)
    with torch.no_grad():
        if sampler is not None or teacher_steps is not None:
            config = sampler.with_steps(teacher_steps) if isinstance(sampler, SamplerConfig) \
                else sampler_config(sampler, teacher_steps)
            return config.sample(net, z, labels, rng=generators)
        sigma_init = sigma_init if sigma_init is not None else float(getattr(net, "provenance", {}).get("sigma_init", SIGMA_INIT))
        return one_step(net, z, labels, sigma_init)


def sample_pixels(net: torch.nn.Module, seeds: Sequence[int], *, encoder=None, **kwargs) -> torch.Tensor:
    """`sample_images` decoded to uint8 NCHW pixels by `encoder` (`full.store.latent`; default: the network's own,
    i.e. EDM's rounding for pixel networks; a latent network's encoder must carry its VAE, see
    `full.store.latent.open_encoder`). `kwargs` are those of `sample_images`."""
    from full.store.latent import encoder_for
    encoder = encoder if encoder is not None else encoder_for(net)
    return encoder.decode(sample_images(net, seeds, **kwargs))
