"""SiD and SiDA at full scale (Zhou et al. 2024, Algorithm 1; Zhou et al. 2025) on EDM-compatible networks.

`SiDTrainer` owns the networks (f_phi frozen; f_psi, G and G_ema start as copies of the teacher, or G from a
distilled generator for SiD²A), the two Adam optimisers and the two objectives. One `iteration_step()`:

1. f_psi step: the fake-score objective (EDM's denoising loss on **detached** generator samples; with SiDA
   plus the discriminator term on real images);
2. G step: the generator objective (SiD's L2 - alpha L1, or SiDA's SiD + GAN terms) on fresh samples, gradients
   flowing into G through x_g and through the inputs of the frozen f_phi and f_psi;
3. EMA of G.

All randomness of an iteration (latents, labels, real images, augmentation, sigma, noise, dropout) is drawn
from generators seeded by (seed, iteration, phase, chunk), where a chunk is one `batch_gpu` slice of the global
batch. Chunk c is processed by rank c mod world in accumulation round c div world, so the set of samples, and
hence the summed gradient, does not depend on how the batch is split over ranks, and a resumed run draws
exactly the numbers the uninterrupted run would have. A chunk's numbers are drawn up front (`Draws`), so that
when some samples give non-finite terms the chunk is evaluated again on the finite samples alone: a NaN in one
sample never reaches the gradient of the others (0 x NaN = NaN would otherwise poison every weight).
"""
from __future__ import annotations

import copy
import inspect
import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from full import distributed
from full.errors import ConfigError
from full.method.augment import Transform, draw_transform
from full.method.ema import ema_beta, ema_update
from full.method.generator import one_step
from full.method.losses import (DenoisingLoss, DenoisingWithDiscriminator, GeneratorObjective, Terms,
                                generator_objective, sample_generator_sigma)
from full.method.optim import adam
from full.method.presets import SiDConfig
from full.nets import same_layout
from full.store.latent import encoder_for

PHASES = {"fake": 1, "generator": 2, "grid": 3}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype. 'auto' is bf16 on GPUs that support it and fp32 elsewhere; 'bf16' and 'fp16' are
    honoured on the CPU too (CPU autocast), so these paths run in tests."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def dropout_slots(net: torch.nn.Module):
    """(module, attribute) of every dropout probability in `net`: EDM's and EDM2's blocks keep it as a float
    `dropout` attribute used with F.dropout, torch's Dropout modules as `p`."""
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            yield module, "p"
        elif isinstance(getattr(module, "dropout", None), float | int) and not isinstance(module.dropout, bool):
            yield module, "dropout"


def set_dropout(net: torch.nn.Module, p: float) -> None:
    """Set every dropout probability of `net` to `p`, as the official code builds G and f_psi with the preset's
    dropout."""
    for module, attribute in dropout_slots(net):
        setattr(module, attribute, p)


def has_logvar_head(net: torch.nn.Module) -> bool:
    """Whether `net` also predicts a log-variance (EDM2's ``return_logvar``)."""
    return "return_logvar" in inspect.signature(net.forward).parameters


def dropout_of(net: torch.nn.Module) -> set[float]:
    """The dropout probabilities found in `net`."""
    return {float(getattr(module, attribute)) for module, attribute in dropout_slots(net)}


@dataclass
class Draws:
    """Every random number of one chunk of one step, drawn up front from the chunk's generator."""
    z: torch.Tensor                              # latents [n, C, H, W]
    labels: torch.Tensor | None                  # one-hot class labels [n, L]
    sigma: torch.Tensor                          # noise levels [n]
    noise: torch.Tensor                          # n ~ N(0, I) [n, C, H, W]
    transform: Transform | None = None           # augmentation of x_g (f_psi step)
    real: torch.Tensor | None = None             # real images in the teacher's model space (SiDA)
    real_transform: Transform | None = None      # augmentation of the real images

    def __len__(self) -> int:
        return self.z.shape[0]

    def subset(self, keep: torch.Tensor) -> "Draws":
        """The same numbers for the samples `keep` only."""
        def pick(value):
            return None if value is None else value.subset(keep) if isinstance(value, Transform) else value[keep]
        return Draws(*(pick(getattr(self, f.name)) for f in dataclasses.fields(self)))


@dataclass
class StepStats:
    """One step (f_psi or G) over the global batch: sums of each named term over the samples kept."""
    sums: dict[str, float]
    kept: int                 # samples whose terms were all finite
    dropped: int              # samples dropped because a term was not finite
    nonfinite_grads: int      # gradient entries that were not finite and were zeroed

    def means(self) -> dict[str, float]:
        """Each term's mean over the samples kept; none if no sample was kept."""
        return {name: value / self.kept for name, value in self.sums.items()} if self.kept else {}


@dataclass
class IterationStats:
    fake: StepStats
    generator: StepStats | None   # None while G waits for the fake score's head start


def finite_rows(terms: Terms) -> torch.Tensor:
    """[B] bool: the samples for which every term is finite."""
    return torch.stack([torch.isfinite(value) for value in terms.values()]).all(dim=0)


class SiDTrainer:
    def __init__(self, config: SiDConfig, teacher: torch.nn.Module, ranks: distributed.Ranks, *,
                 data=None, init_generator: torch.nn.Module | None = None):
        batch_gpu = config.batch_gpu or config.batch // ranks.world
        if batch_gpu == 0 or config.batch % (batch_gpu * ranks.world) != 0:
            raise ConfigError(f"--batch {config.batch} is not a multiple of --batch-gpu {batch_gpu} x {ranks.world} "
                              f"rank(s); choose a --batch-gpu that divides batch / ranks")
        self.config, self.ranks, self.device = config, ranks, ranks.device
        self.batch_gpu, self.rounds = batch_gpu, config.batch // (batch_gpu * ranks.world)
        self.dtype = resolve_precision(config.precision, self.device)
        logvar = has_logvar_head(teacher) and config.return_logvar
        self.objective: GeneratorObjective = generator_objective(
            config.objective, logvar=logvar, alpha=config.alpha, gan_weight=config.lsg_gan / config.lsg,
            gan_after_nimg=int(config.gan_after_kimg * 1000))
        denoising = dict(P_mean=config.p_mean, P_std=config.p_std, uses_logvar=logvar)
        self.fake_objective = (DenoisingWithDiscriminator(discriminator_weight=config.lsd / config.ls, **denoising)
                               if self.objective.needs_logits else DenoisingLoss(**denoising))
        if self.objective.needs_logits and data is None:
            raise ConfigError(f"--objective {config.objective} needs real images: pass --data DATASET.zip "
                              f"(the teacher's training set as an EDM dataset zip)")
        self.data = data
        self.encoder = encoder_for(teacher)  # how real dataset items reach the teacher's model space (SiDA)
        self.f_phi = teacher.to(self.device).eval().requires_grad_(False)
        self.f_psi = copy.deepcopy(self.f_phi).requires_grad_(True)
        self.G = copy.deepcopy(init_generator.to(self.device) if init_generator is not None else self.f_phi)
        self.G.requires_grad_(True)
        for net in (self.G, self.f_psi):
            set_dropout(net, config.dropout)
            if hasattr(net, "set_force_normalization"):  # renormalised once per step instead (`_renormalise`)
                net.set_force_normalization(False)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # Snapshots describe the generator; the teacher's own record is nested, not inherited.
        self.G_ema.provenance = {"teacher_provenance": getattr(teacher, "provenance", {})}
        self.opt_psi = adam(self.f_psi.parameters(), config.lr, 0.0, config.adam_eps, self.device)
        self.opt_G = adam(self.G.parameters(), config.glr, config.g_beta1, config.adam_eps, self.device)
        fp16 = self.dtype == torch.float16
        self.scalers = {name: torch.amp.GradScaler(self.device.type, enabled=fp16) for name in ("fake", "generator")}
        self.iteration, self.nimg = 0, 0
        self.img_shape = (teacher.img_channels, teacher.img_resolution, teacher.img_resolution)
        self.label_dim = teacher.label_dim
        self.label_source = None  # optional callable(n, rng) -> one-hot labels (--labels-from)

    # ------------------------------------------------------------------ sampling
    def rng(self, phase: str, chunk: int, iteration: int | None = None) -> torch.Generator:
        """The generator for one chunk of one phase of one iteration (see module docstring)."""
        it = self.iteration if iteration is None else iteration
        seed = (((self.config.seed * 1_000_003 + it) * 7 + PHASES[phase]) * 1_000_003 + chunk) % (2 ** 63)
        return torch.Generator(self.device).manual_seed(seed)

    def latents(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z ~ N(0, I) and class labels (uniform one-hot, data-free, or from --labels-from) for n images."""
        z = torch.randn((n, *self.img_shape), generator=rng, device=self.device)
        if self.label_dim == 0:
            return z, None
        if self.label_source is not None:
            return z, self.label_source(n, rng).to(self.device)
        idx = torch.randint(self.label_dim, (n,), generator=rng, device=self.device)
        return z, torch.nn.functional.one_hot(idx, self.label_dim).float()

    def real_batch(self, n: int, rng: torch.Generator, images: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """n random items of the real dataset (SiDA): in the teacher's model space (if asked; pixels in [-1, 1],
        or EDM2 latents (mean + std n) scale + bias with n drawn from `rng` after the indices, see
        `full.store.latent`) and one-hot labels for the teacher (None when it is unconditional). The
        generator's labels come from this batch."""
        idx = torch.randint(len(self.data), (n,), generator=rng, device=self.device).cpu()
        raw, labels = self.data.batch(idx, images=images)
        real = None if raw is None else self.encoder.encode_dataset_batch(raw.to(self.device), rng)
        labels = None if self.label_dim == 0 else labels.to(self.device, torch.float32)
        return real, labels

    def draw(self, phase: str, rng: torch.Generator) -> Draws:
        """A chunk's numbers, in a fixed order: latents and labels (from the real batch with SiDA), then the
        augmentation (f_psi step), then sigma and noise."""
        n = self.batch_gpu
        real = None
        if self.data is not None and (phase == "fake" or self.label_dim):
            z = torch.randn((n, *self.img_shape), generator=rng, device=self.device)
            real, labels = self.real_batch(n, rng, images=phase == "fake")
        else:
            z, labels = self.latents(n, rng)
        transform = real_transform = None
        if phase == "fake" and self.config.augment > 0:
            transform = draw_transform(n, self.config.augment, rng, self.device)
            if real is not None:
                real_transform = draw_transform(n, self.config.augment, rng, self.device)
        if phase == "fake":
            sigma = self.fake_objective.sample_sigma(n, device=self.device, rng=rng)
        else:
            sigma = sample_generator_sigma(n, self.config.t_max, device=self.device, rng=rng)
        noise = torch.randn(z.shape, generator=rng, device=self.device)
        return Draws(z, labels, sigma, noise, transform, real, real_transform)

    def generate(self, net: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """One-step generation x_g = G(sigma_init z, sigma_init)."""
        return one_step(net, z, labels, self.config.sigma_init)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def _frozen(self, net: torch.nn.Module):
        """Call a frozen denoiser, through activation checkpointing if configured."""
        if not self.config.checkpointing:
            return net
        wrapped = functools.partial(checkpoint, net, use_reentrant=False)
        if hasattr(net, "logits"):
            wrapped.logits = functools.partial(checkpoint, net.logits, use_reentrant=False)
        return wrapped

    # ------------------------------------------------------------------ the two steps
    def fake_terms(self, d: Draws) -> Terms:
        """The f_psi objective on one chunk: detached x_g = G(sigma_init z) (augmented, with the augment labels
        passed to f_psi), and with SiDA the real images at the same sigma and noise."""
        with torch.no_grad(), self._autocast():
            x_g = self.generate(self.G.eval(), d.z, d.labels).float()
        kwargs = {"class_labels": d.labels}
        if d.transform is not None:
            x_g, kwargs["augment_labels"] = d.transform(x_g), d.transform.labels()
        extra = {}
        if d.real is not None:
            real, real_kwargs = d.real, {"class_labels": d.labels}
            if d.real_transform is not None:
                real, real_kwargs["augment_labels"] = d.real_transform(real), d.real_transform.labels()
            extra = {"real": real, "real_kwargs": real_kwargs}
        with self._autocast():
            return self.fake_objective(self.f_psi, x_g, d.sigma, d.noise, **extra, **kwargs)

    def generator_terms(self, d: Draws) -> Terms:
        """The generator objective on one chunk, at the current number of images (SiDA's GAN schedule)."""
        with self._autocast():
            x_g = self.generate(self.G, d.z, d.labels).float()
            return self.objective.at(self.nimg)(self._frozen(self.f_phi), self._frozen(self.f_psi), x_g, d.sigma,
                                                d.noise, class_labels=d.labels)

    def _accumulate(self, phase: str, net: torch.nn.Module, opt: torch.optim.Optimizer, loss_scale: float,
                    terms_of, grad_clip: float = 0.0) -> StepStats:
        """Gradient accumulation shared by both steps. For each of this rank's chunks: draw its numbers, seed
        dropout, evaluate ``terms_of(draws)``; if some samples give non-finite terms, evaluate again on the
        finite samples alone (same numbers). Backward of sum(loss) * loss_scale / batch; then sum the gradients
        over ranks, repair non-finite entries, optionally clip, and step `opt`."""
        opt.zero_grad(set_to_none=True)
        names, sums, kept, dropped = None, None, 0, 0
        for chunk in self._chunks():
            rng = self.rng(phase, chunk)
            draws = self.draw(phase, rng)
            keep, terms = None, None
            while True:
                torch.manual_seed(rng.initial_seed())  # dropout masks: a function of the chunk too
                terms = terms_of(draws if keep is None else draws.subset(keep))
                names = names or list(terms)  # so that a rank which keeps no sample still reports every term
                finite = finite_rows(terms)
                if bool(finite.all()):
                    break
                keep = (torch.arange(len(draws), device=finite.device) if keep is None else keep)[finite]
                if keep.numel() == 0:
                    terms = None
                    break
            n = len(draws) if keep is None else keep.numel()
            dropped += len(draws) - n
            if terms is None:
                continue
            self.scalers[phase].scale(terms["loss"].float().sum() * loss_scale / self.config.batch).backward()
            chunk_sums = torch.stack([value.detach().float().sum() for value in terms.values()])
            sums = chunk_sums if sums is None else sums + chunk_sums
            kept += n
        bad = self._finish(net, opt, self.scalers[phase], grad_clip)
        return StepStats(dict(zip(names, sums.tolist() if sums is not None else [0.0] * len(names))), kept, dropped,
                         bad)

    def _renormalise(self, net: torch.nn.Module) -> None:
        """EDM2's forced weight normalisation, once before the network's step (see `EDM2Precond.normalize_weights_`)."""
        if self.config.force_normalization and hasattr(net, "normalize_weights_"):
            net.normalize_weights_()

    def _chunks(self):
        for r in range(self.rounds):
            yield r * self.ranks.world + self.ranks.rank

    def _finish(self, net: torch.nn.Module, opt: torch.optim.Optimizer, scaler, grad_clip: float) -> int:
        """Sum gradients over ranks, zero non-finite entries (counted), clip, step, release the gradients.
        Finiteness is checked with one fused reduction; entries are counted and repaired only when it fails."""
        params = list(net.parameters())
        if self.ranks.world > 1:  # every rank must contribute the same buffers, even if it dropped every sample
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        params = [p for p in params if p.grad is not None]
        if not params:
            opt.zero_grad(set_to_none=True)
            return 0
        distributed.all_reduce_gradients(params, self.ranks)
        scaler.unscale_(opt)
        grads = [p.grad for p in params]
        bad = 0
        if not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
            bad = int(sum(int((~torch.isfinite(g)).sum()) for g in grads))
            for g in grads:
                torch.nan_to_num_(g, nan=0.0, posinf=1e5, neginf=-1e5)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_value_(params, grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)  # free the gradient memory before the other network's step
        return bad

    def fake_step(self) -> StepStats:
        """Fit f_psi to detached G samples (Algorithm 1, fake-score update)."""
        self.f_psi.train()
        self._renormalise(self.f_psi)
        try:
            return self._accumulate("fake", self.f_psi, self.opt_psi, self.config.ls, self.fake_terms,
                                    self.config.psi_grad_clip)
        finally:
            self.f_psi.eval()

    def generator_step(self) -> StepStats:
        """Update G with the generator objective (Algorithm 1, generator update)."""
        self.G.train()
        self._renormalise(self.G)
        self.f_psi.requires_grad_(False)
        try:
            return self._accumulate("generator", self.G, self.opt_G, self.config.lsg, self.generator_terms)
        finally:
            self.G.eval()
            self.f_psi.requires_grad_(True)

    def ema_step(self) -> None:
        ema_update(self.G_ema, self.G, ema_beta(self.config.batch, self.nimg, self.config.ema))

    def generator_waits(self) -> bool:
        """Whether G is still waiting for the fake score's head start (SiDA: 100k images)."""
        return self.nimg < self.config.g_after_kimg * 1000

    def iteration_step(self) -> IterationStats:
        """One iteration: f_psi step, G step (unless G waits for the head start), EMA, in this order."""
        fake = self._reduce(self.fake_step())
        generator = None if self.generator_waits() else self._reduce(self.generator_step())
        self.ema_step()
        self.iteration += 1
        self.nimg += self.config.batch
        return IterationStats(fake, generator)

    def _reduce(self, stats: StepStats) -> StepStats:
        """Sum a step's statistics over ranks (the gradients already are)."""
        if self.ranks.world == 1:
            return stats
        names = sorted(stats.sums)
        values = torch.tensor([stats.sums[k] for k in names] + [stats.kept, stats.dropped, stats.nonfinite_grads],
                              dtype=torch.float64, device=self.device)
        values = distributed.all_reduce_sum(values, self.ranks).tolist()
        return StepStats(dict(zip(names, values[:len(names)])), *(int(v) for v in values[len(names):]))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "f_psi": self.f_psi.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_psi": self.opt_psi.state_dict(),
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "iteration": self.iteration, "nimg": self.nimg, "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state made by `state_dict` for this architecture; the caller has checked the config."""
        for name in ("G", "G_ema", "f_psi"):
            if not same_layout(getattr(self, name).state_dict(), state[name]):
                raise ConfigError(f"the training state's {name} does not fit this teacher's architecture; "
                                  f"resume with the teacher it was made from, or use a new --outdir")
            getattr(self, name).load_state_dict(state[name])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_psi.load_state_dict(state["opt_psi"])
        for k, s in self.scalers.items():
            s.load_state_dict(state["scalers"][k])
        self.iteration, self.nimg = int(state["iteration"]), int(state["nimg"])
        torch.set_rng_state(state["torch_rng"])
