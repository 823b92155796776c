"""Toy SiD distillation: the full algorithm from 1-D to d-D with an exact or a fitted teacher.

The teacher f_phi is either the target's closed-form denoiser (``teacher="exact"``), or a small MLP
denoiser fitted to exact target samples with the same EDM denoising loss (``teacher="fitted"``), whose
errors are those of a trained network; a fitted teacher is cached per (target, seed, fit budget), so a
sweep over alpha fits it once. The generator is either
(a) affine, x_g = A z + b, whose fake score f_psi* is known exactly (a `Gaussian`), or
(b) an MLP, whose fake score is an MLP denoiser fitted with the shared EDM denoising loss on
    detached generator samples, alternating k f_psi steps with one G step (paper Algorithm 1).
Distances are always measured against the exact target.

With ``loss="sida"`` (Zhou et al. 2025) the MLP fake score is also the discriminator (its hidden features give
the logit) and the f_psi step sees exact target samples as the real data: the one place where the toy uses
data rather than the teacher alone.

`ToyDistillation` is an iterable: each step yields a `StepRecord`, so the CLI, the explorer and
the notebooks all consume the same loop live.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch

from full.errors import ConfigError
from full.method.losses import GENERATOR_OBJECTIVES, DenoisingLoss, DenoisingWithDiscriminator, generator_objective
from full.options import AT_LEAST_ONE, NONNEGATIVE, POSITIVE, Choices, Range, check_fields, option
from toy.families import Gaussian, GaussianMixture, gaussian_kl
from toy.metrics import energy_distance, off_mode_fraction, self_distance, target_nll
from toy.models import GENERATORS, MLPDenoiser, fit_denoiser
from toy.targets import make_target

TOY_LOSSES = list(GENERATOR_OBJECTIVES)
TEACHERS = ("exact", "fitted")


def supported(generator: str, loss: str) -> bool:
    """Whether a generator kind can run a loss: one that reads f_psi's discriminator logit (SiDA) needs the fitted
    MLP fake score, whose hidden features give it; the affine generator's exact fake score has none."""
    return generator == "mlp" or not GENERATOR_OBJECTIVES[loss].needs_logits


@dataclass
class ToyConfig:
    target: str = option("8gaussians", "name in toy.targets.TARGETS")
    generator: str = option("mlp", "'affine' (exact fake score) or 'mlp' (fitted fake score)")
    loss: str = option("sid", "generator objective: " + ", ".join(TOY_LOSSES))
    alpha: float = option(1.2, "SiD's alpha in L2 - alpha * L1", Range(-10, 10))
    steps: int = option(2000, "generator updates", AT_LEAST_ONE)
    batch: int = option(512, "samples per update", AT_LEAST_ONE)
    lr: float = option(1e-3, "Adam learning rate of G", NONNEGATIVE)
    g_beta1: float = option(0.0, "Adam beta1 of G (SiD uses 0)", Range(0, 1, high_open=True))
    fake_lr: float = option(1e-3, "Adam learning rate of f_psi (MLP generator only)", NONNEGATIVE)
    fake_steps: int = option(5, "f_psi updates per G update (k)", AT_LEAST_ONE)
    fake_warmup: int = option(200, "f_psi updates before the first G update", NONNEGATIVE)
    t_max: float = option(800, "generator-step noise range: t ~ U[0, t_max/1000]", Range(0, 1000))
    hidden: int = option(128, "MLP width (generator and f_psi)", AT_LEAST_ONE)
    seed: int = option(0, "seeds initialisation, training noise and evaluation sets")
    eval_every: int = option(50, "steps between distance evaluations (and the last step)", AT_LEAST_ONE)
    eval_samples: int = option(2000, "samples used by the distances", Range(2))
    teacher: str = option("exact", "f_phi: 'exact' (the target's closed-form denoiser) or 'fitted' (an MLP "
                          "denoiser fitted to target samples)", Choices(TEACHERS))
    teacher_steps: int = option(2000, "Adam steps of the fitted teacher", AT_LEAST_ONE)
    teacher_hidden: int = option(128, "MLP width of the fitted teacher", AT_LEAST_ONE)
    teacher_lr: float = option(1e-3, "Adam learning rate of the fitted teacher", POSITIVE)
    teacher_batch: int = option(512, "target samples per step of the fitted teacher", AT_LEAST_ONE)
    lsd: float = option(1.0, "SiDA: weight of the discriminator term in the f_psi step", NONNEGATIVE)
    gan_weight: float = option(0.25, "SiDA: G loss = 0.5 SiD + 0.5 gan_weight * dim * GAN", NONNEGATIVE)

    def validate(self) -> None:
        make_target(self.target)
        if self.generator not in GENERATORS:
            raise ConfigError(f"unknown generator {self.generator!r}; choose one of: {', '.join(GENERATORS)}")
        if self.loss not in TOY_LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of: {', '.join(TOY_LOSSES)}")
        if not supported(self.generator, self.loss):
            raise ConfigError(f"--loss {self.loss} needs a fitted fake score (its discriminator): use --generator mlp")
        check_fields(self)


FITTED_TEACHERS: dict[tuple, MLPDenoiser] = {}   # teacher_key(config) -> frozen fitted f_phi


def teacher_key(config: ToyConfig) -> tuple:
    """What a fitted teacher depends on: the target, the seed and the fit's budget."""
    return (config.target, config.seed, config.teacher_steps, config.teacher_hidden, config.teacher_lr,
            config.teacher_batch)


def fit_teacher(config: ToyConfig, losses: list[float] | None = None) -> MLPDenoiser:
    """f_phi fitted to exact samples of `config.target` (`toy.models.fit_denoiser`, seeded by 20000 + seed),
    without the cache."""
    target = make_target(config.target)
    return fit_denoiser(lambda n, rng: target.sample(n, rng), target.dim, steps=config.teacher_steps,
                        hidden=config.teacher_hidden, lr=config.teacher_lr, batch=config.teacher_batch,
                        sigma_data=data_scale(target), seed=20_000 + config.seed, losses=losses)


def fitted_teacher(config: ToyConfig) -> MLPDenoiser:
    """The cached `fit_teacher(config)`: fitted once per `teacher_key` in this process."""
    key = teacher_key(config)
    if key not in FITTED_TEACHERS:
        FITTED_TEACHERS[key] = fit_teacher(config)
    return FITTED_TEACHERS[key]


def data_scale(target: GaussianMixture) -> float:
    """sigma_data of EDM's preconditioning: the root mean per-coordinate variance of the target."""
    return float(target.moments()[1].diagonal().mean().sqrt())


@dataclass
class StepRecord:
    step: int                         # generator updates done
    loss: float                       # generator loss (batch mean)
    fake_loss: float | None           # last f_psi denoising loss (None with an exact fake score)
    seconds: float                    # wall time since the start
    energy: float | None = None       # energy distance to the target (evaluation steps only)
    nll: float | None = None          # mean NLL of samples under the exact target
    kl: float | None = None           # exact KL(p_theta || p_data), affine generator on a Gaussian target
    off_mode: float | None = None     # share of samples more than 3 standard deviations from every mode
    samples: torch.Tensor | None = field(default=None, repr=False)  # evaluation samples

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "samples"}


class ToyDistillation:
    """One toy SiD run. Iterate it to train; read `G`, `f_psi`, `teacher`, `target` for plots at any time."""

    def __init__(self, config: ToyConfig):
        config.validate()
        self.config = config
        torch.manual_seed(config.seed)
        self.target = make_target(config.target)
        dim = self.target.dim
        self.G = GENERATORS[config.generator](dim, **({"hidden": config.hidden} if config.generator == "mlp" else {}))
        self.exact_fake = config.generator == "affine"
        sigma_data = data_scale(self.target)
        self.sigma_data = sigma_data
        self.f_psi_net = None if self.exact_fake else MLPDenoiser(dim, config.hidden, sigma_data=sigma_data)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=(config.g_beta1, 0.999))
        self.opt_psi = None if self.exact_fake else torch.optim.Adam(self.f_psi_net.parameters(), lr=config.fake_lr,
                                                                     betas=(0.0, 0.999))
        self.objective = generator_objective(config.loss, alpha=config.alpha, gan_weight=config.gan_weight,
                                             gan_after_nimg=0)
        self.fake_objective = (DenoisingWithDiscriminator(sigma_data=sigma_data, discriminator_weight=config.lsd)
                               if self.objective.needs_logits else DenoisingLoss(sigma_data=sigma_data))
        self.rng = torch.Generator().manual_seed(config.seed + 1)
        eval_rng = torch.Generator().manual_seed(10_000 + config.seed)
        self.eval_z = torch.randn(config.eval_samples, dim, generator=eval_rng)
        self.eval_target = self.target.sample(config.eval_samples, rng=eval_rng)
        self._eval_target_spread = self_distance(self.eval_target)
        # f_phi: the exact denoiser, or the fitted one (its own seeded RNG: the draws above are unchanged).
        self.teacher = self.target if config.teacher == "exact" else fitted_teacher(config)

    def f_psi(self) -> torch.nn.Module:
        """The current fake score: exact N(b, A A^T) for the affine generator, else the fitted MLP."""
        if self.exact_fake:
            dist = self.G.distribution()
            return Gaussian(dist.mean.detach(), dist.cov.detach())
        return self.f_psi_net

    def sample(self, n: int | None = None) -> torch.Tensor:
        """Generator samples on the fixed evaluation noise (or n fresh ones)."""
        with torch.no_grad():
            z = self.eval_z if n is None else torch.randn(n, self.target.dim, generator=self.rng)
            return self.G(z)

    def _noise(self) -> torch.Tensor:
        return torch.randn(self.config.batch, self.target.dim, generator=self.rng)

    def _fake_step(self) -> float:
        with torch.no_grad():
            x_g = self.G(self._noise())
        real = {"real": self.target.sample(self.config.batch, self.rng)} if self.objective.needs_logits else {}
        loss = self.fake_objective(self.f_psi_net, x_g, rng=self.rng, **real)["loss"].mean()
        self.opt_psi.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_psi.step()
        return loss.item()

    def _generator_step(self) -> float:
        f_psi = self.f_psi()
        f_psi.requires_grad_(False)
        loss = self.objective(self.teacher, f_psi, self.G(self._noise()), t_max=self.config.t_max,
                              rng=self.rng)["loss"].mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        f_psi.requires_grad_(True)
        return loss.item()

    def evaluate(self) -> dict:
        """Energy distance and NLL against the target; exact KL where it exists."""
        samples = self.sample()
        out = {"energy": energy_distance(samples, self.eval_target, self._eval_target_spread).item(),
               "nll": target_nll(self.target, samples).item(), "samples": samples,
               "off_mode": off_mode_fraction(self.target, samples).item()}
        if self.exact_fake and isinstance(self.target, Gaussian):
            with torch.no_grad():
                dist = self.G.distribution()
                as64 = lambda g: Gaussian(g.mean.double(), g.cov.double())  # noqa: E731 (KL needs float64 near 0)
                out["kl"] = gaussian_kl(as64(dist), as64(self.target)).item()
        return out

    def __iter__(self) -> Iterator[StepRecord]:
        cfg, start = self.config, time.perf_counter()
        fake_loss = None
        if not self.exact_fake:
            for _ in range(cfg.fake_warmup):
                fake_loss = self._fake_step()
        for step in range(1, cfg.steps + 1):
            if not self.exact_fake:
                for _ in range(cfg.fake_steps):
                    fake_loss = self._fake_step()
            loss = self._generator_step()
            metrics = self.evaluate() if step % cfg.eval_every == 0 or step == cfg.steps else {}
            yield StepRecord(step, loss, fake_loss, time.perf_counter() - start, **metrics)
