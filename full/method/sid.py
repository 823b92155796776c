"""The SiD algorithm at full scale (Zhou et al. 2024, Algorithm 1) on EDM-compatible networks.

`SiDTrainer` owns the three networks, the two Adam optimisers and the EMA. One `iteration()`:

1. f_psi step: the shared EDM denoising loss on **detached** generator samples;
2. G step: the shared SiD generator loss on fresh samples, gradients flowing into G through
   x_g and through the inputs of the frozen f_phi and f_psi;
3. EMA of G.

All randomness of an iteration (latents, labels, sigma, noise, dropout) is drawn from generators
seeded by (seed, iteration, phase, chunk), where a chunk is one `batch_gpu` slice of the global
batch. Chunk c is processed by rank c mod world in accumulation round c div world, so the set of
samples, and hence the summed gradient, does not depend on how the batch is split over ranks,
and a resumed run draws exactly the numbers the uninterrupted run would have.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from full import distributed
from full.method.augment import augment
from full.method.ema import ema_beta, ema_update
from full.method.generator import one_step
from full.method.losses import DenoisingLoss, generator_objective
from full.errors import ConfigError
from full.method.presets import SiDConfig

PHASES = {"fake": 1, "generator": 2, "grid": 3}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: always fp32 on CPU; 'auto' is bf16 on GPUs that support it, else fp32."""
    if device.type != "cuda":
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def set_dropout(net: torch.nn.Module, p: float) -> None:
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


@dataclass
class IterationStats:
    """Per-iteration sums over the global batch (the caller averages them per tick)."""
    fake_loss: float          # mean per-sample f_psi loss
    generator_loss: float     # mean per-sample generator loss
    nan_samples: int          # samples dropped because their loss was not finite (both steps)
    nonfinite_grads: int      # gradient entries that were NaN/inf and were zeroed (both steps)


class SiDTrainer:
    def __init__(self, config: SiDConfig, teacher: torch.nn.Module, ranks: distributed.Ranks):
        batch_gpu = config.batch_gpu or config.batch // ranks.world
        if config.batch % (batch_gpu * ranks.world) != 0:
            raise ConfigError(f"batch {config.batch} is not a multiple of batch_gpu {batch_gpu} x {ranks.world} "
                             f"rank(s); choose --batch-gpu that divides batch / ranks")
        self.config, self.ranks, self.device = config, ranks, ranks.device
        self.batch_gpu, self.rounds = batch_gpu, config.batch // (batch_gpu * ranks.world)
        self.dtype = resolve_precision(config.precision, self.device)
        self.f_phi = teacher.to(self.device).eval().requires_grad_(False)
        self.G = copy.deepcopy(self.f_phi).requires_grad_(True)
        self.f_psi = copy.deepcopy(self.f_phi).requires_grad_(True)
        for net in (self.G, self.f_psi):
            set_dropout(net, config.dropout)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # Snapshots describe the generator; the teacher's own record is nested, not inherited.
        self.G_ema.provenance = {"teacher_provenance": getattr(teacher, "provenance", {})}
        self.opt_psi = torch.optim.Adam(self.f_psi.parameters(), lr=config.lr, betas=(0.0, 0.999), eps=config.adam_eps)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.glr, betas=(config.g_beta1, 0.999),
                                      eps=config.adam_eps)
        fp16 = self.dtype == torch.float16
        self.scalers = {name: torch.amp.GradScaler(self.device.type, enabled=fp16) for name in ("fake", "generator")}
        self.iteration, self.nimg = 0, 0
        self.img_shape = (teacher.img_channels, teacher.img_resolution, teacher.img_resolution)
        self.label_dim = teacher.label_dim
        self.objective = generator_objective("sid", alpha=config.alpha)
        self.label_source = None  # optional callable(n, generator) -> one-hot labels (--labels-from)

    # ------------------------------------------------------------------ sampling
    def rng(self, phase: str, chunk: int, iteration: int | None = None) -> torch.Generator:
        """The generator for one chunk of one phase of one iteration (see module docstring)."""
        it = self.iteration if iteration is None else iteration
        seed = (((self.config.seed * 1_000_003 + it) * 7 + PHASES[phase]) * 1_000_003 + chunk) % (2 ** 63)
        return torch.Generator(self.device).manual_seed(seed)

    def latents(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z ~ N(0, I) and class labels (uniform one-hot, data-free) for n images."""
        z = torch.randn((n, *self.img_shape), generator=rng, device=self.device)
        if self.label_dim == 0:
            return z, None
        if self.label_source is not None:
            return z, self.label_source(n, rng).to(self.device)
        idx = torch.randint(self.label_dim, (n,), generator=rng, device=self.device)
        return z, torch.nn.functional.one_hot(idx, self.label_dim).float()

    def generate(self, net: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """One-step generation x_g = G(sigma_init z, sigma_init)."""
        return one_step(net, z, labels, self.config.sigma_init)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    # ------------------------------------------------------------------ the three updates
    def _chunks(self):
        for r in range(self.rounds):
            yield r * self.ranks.world + self.ranks.rank

    def _finish(self, net: torch.nn.Module, opt: torch.optim.Optimizer, scaler) -> int:
        """Sum gradients over ranks, zero non-finite entries (counted), step, release the gradients."""
        params = [p for p in net.parameters() if p.grad is not None]
        distributed.all_reduce_gradients(params, self.ranks)
        scaler.unscale_(opt)
        nonfinite = sum(int((~torch.isfinite(p.grad)).sum()) for p in params)
        for p in params:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)  # free the gradient memory before the other network's step
        return nonfinite

    def _masked_sum(self, per_sample: torch.Tensor) -> tuple[torch.Tensor, int, float]:
        finite = torch.isfinite(per_sample)
        kept = per_sample[finite]
        return kept.sum(), int((~finite).sum()), float(kept.detach().sum())

    def _accumulate(self, phase: str, net: torch.nn.Module, opt: torch.optim.Optimizer, loss_scale: float,
                    per_sample_loss) -> tuple[float, int, int]:
        """Gradient accumulation shared by both updates. For each of this rank's chunks: the chunk's generator
        (also seeding dropout), latents and labels, then backward of the finite part of
        ``per_sample_loss(z, labels, g)`` [B] times ``loss_scale / batch``. Then sum over ranks and step `opt`.
        Returns (loss sum, dropped samples, non-finite gradient entries)."""
        opt.zero_grad(set_to_none=True)
        total, nans = 0.0, 0
        for chunk in self._chunks():
            g = self.rng(phase, chunk)
            torch.manual_seed(g.initial_seed())  # dropout
            z, labels = self.latents(self.batch_gpu, g)
            loss, bad, value = self._masked_sum(per_sample_loss(z, labels, g).float())
            self.scalers[phase].scale(loss * loss_scale / self.config.batch).backward()
            total, nans = total + value, nans + bad
        return total, nans, self._finish(net, opt, self.scalers[phase])

    def fake_step(self) -> tuple[float, int, int]:
        """Fit f_psi to detached G samples (ADA-augmented with probability `augment`, labels passed to
        f_psi as augment_labels) with the EDM denoising loss; returns (loss sum, NaN samples, bad grads)."""
        def per_sample_loss(z, labels, g):
            with torch.no_grad(), self._autocast():
                x_g = self.generate(self.G.eval(), z, labels).float()
            extra = {}
            if self.config.augment > 0:
                x_g, extra["augment_labels"] = augment(x_g, self.config.augment, g)
            with self._autocast():
                return DenoisingLoss()(self.f_psi, x_g, rng=g, class_labels=labels, **extra)["loss"]

        self.f_psi.train()
        try:
            return self._accumulate("fake", self.f_psi, self.opt_psi, self.config.ls, per_sample_loss)
        finally:
            self.f_psi.eval()

    def _frozen(self, net: torch.nn.Module):
        """Call a frozen denoiser, through activation checkpointing if configured."""
        if not self.config.checkpointing:
            return net
        return functools.partial(checkpoint, net, use_reentrant=False)

    def generator_step(self) -> tuple[float, int, int]:
        """Update G with the SiD loss; returns (loss sum, NaN samples, bad grads)."""
        def per_sample_loss(z, labels, g):
            with self._autocast():
                x_g = self.generate(self.G, z, labels).float()
                return self.objective(self._frozen(self.f_phi), self._frozen(self.f_psi), x_g,
                                      t_max=self.config.t_max, rng=g, class_labels=labels)["loss"]

        self.G.train()
        self.f_psi.requires_grad_(False)
        try:
            return self._accumulate("generator", self.G, self.opt_G, self.config.lsg, per_sample_loss)
        finally:
            self.G.eval()
            self.f_psi.requires_grad_(True)

    @torch.no_grad()
    def ema_step(self) -> None:
        ema_update(self.G_ema, self.G, ema_beta(self.config.batch, self.nimg, self.config.ema))

    def iteration_step(self) -> IterationStats:
        """One SiD iteration: f_psi step, G step, EMA (in this order)."""
        fake, fake_nans, fake_bad = self.fake_step()
        gen, gen_nans, gen_bad = self.generator_step()
        self.ema_step()
        sums = distributed.all_reduce_sum(torch.tensor([fake, gen, fake_nans + gen_nans], dtype=torch.float64,
                                                       device=self.device), self.ranks).tolist()
        self.iteration += 1
        self.nimg += self.config.batch
        n = self.config.batch
        return IterationStats(sums[0] / n, sums[1] / n, int(sums[2]), fake_bad + gen_bad)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "f_psi": self.f_psi.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_psi": self.opt_psi.state_dict(),
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "iteration": self.iteration, "nimg": self.nimg, "seed": self.config.seed, "batch": self.config.batch,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "batch"):
            if state[key] != getattr(self.config, key):
                raise ConfigError(f"the training state was made with {key}={state[key]} but this run has "
                                 f"{key}={getattr(self.config, key)}; pass the same --{key} or a new --outdir")
        for name in ("G", "G_ema", "f_psi"):
            mine = getattr(self, name).state_dict()
            theirs = state[name]
            if list(mine) != list(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
                raise ConfigError(f"the training state's {name} does not fit this teacher's architecture; "
                                 f"resume with the teacher it was made from, or use a new --outdir")
            getattr(self, name).load_state_dict(theirs)
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_psi.load_state_dict(state["opt_psi"])
        for k, s in self.scalers.items():
            s.load_state_dict(state["scalers"][k])
        self.iteration, self.nimg = int(state["iteration"]), int(state["nimg"])
        torch.set_rng_state(state["torch_rng"])
