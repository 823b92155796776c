"""The SiD losses, written once for `toy` and `full`: each objective is an object whose call reads like its equation.

This module imports only torch. Every objective works on any tensor shape ``[B, ...]``: 2-D toy points
``[B, d]`` or images ``[B, C, H, W]``. Denoisers are plain callables ``f(x_t, sigma, **kwargs) -> E[x_0 | x_t]``
where ``sigma`` has shape ``[B, 1, ..., 1]``, so a toy closed-form denoiser and an EDM network are called the
same way. Every objective returns a **named map of per-sample terms** (`Terms`, each ``[B]``); the entry
``"loss"`` is the one that is minimised, the others are logged beside it.

Notation (Zhou et al., ICML 2024, "Score identity Distillation"):
  x_g = G_theta(z)                 generator sample
  x_t = x_g + sigma_t * eps        forward diffusion with a_t = 1 (EDM/VE form)
  f_phi(x_t, sigma)                pretrained teacher denoiser (frozen)
  f_psi(x_t, sigma)                fake-score denoiser, fitted to p_theta
  L1 = ||f_phi - f_psi||^2                        naive loss (paper Eq. 9)
  L2 = (f_phi - f_psi)^T (f_phi - x_g)            projected loss (Eq. 17)
  SiD = L2 - alpha * L1                           generator loss (Eq. 22)
SiDA (Zhou et al., ICLR 2025, "Adversarial Score identity Distillation") adds a GAN term whose discriminator
is f_psi's own encoder (`SiDA`, `DenoisingWithDiscriminator`). EDM2 networks (Karras et al., CVPR 2024) also
predict a log-variance logvar(sigma); their denoising loss is weighted by it (`DenoisingLoss(uses_logvar=True)`),
and SiDA-EDM2 divides every generator term by exp(logvar) of f_psi (`LogvarWeighted`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

Denoiser = Callable[..., torch.Tensor]
Terms = dict[str, torch.Tensor]

# EDM training distribution of sigma and data scale (Karras et al. 2022, Table 1).
P_MEAN = -1.2
P_STD = 1.2
SIGMA_DATA = 0.5
# Karras et al. (2022) Eq. 5 schedule constants used by SiD's generator step.
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
T_MAX = 800
# Lower clip of SiD's per-sample normaliser (official sid_loss.py, generator_loss).
WEIGHT_FLOOR = 1e-5
# Clip of the discriminator logit in SiDA's generator term (official sida_loss.py).
LOGIT_CLIP = 10.0


def per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the batch: ``[B, ...] -> [B]``."""
    return x.flatten(1).sum(dim=1)


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: ``[B, ...] -> [B]``."""
    return x.flatten(1).mean(dim=1)


def as_batch_sigma(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample sigma ``[B]`` (or a scalar) to ``[B, 1, ..., 1]`` so it broadcasts over ``like``."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(like.shape[0])
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


# --------------------------------------------------------------------------- noise levels


def karras_ramp(u: torch.Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                rho: float = RHO) -> torch.Tensor:
    """Karras et al. (2022) Eq. 5 as a function of the ramp u in [0, 1]:
    sigma(u) = (sigma_max^(1/rho) + u (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, so u = 0 gives sigma_max.

    EDM's sampler steps along u = i / (N - 1); SiD's generator step reads it backwards (`karras_sigma`)."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + u * (b - a)) ** rho


def karras_sigma(t: torch.Tensor) -> torch.Tensor:
    """SiD's noise level at t in [0, 1]: `karras_ramp` at u = 1 - t, so t = 0 gives sigma_min, t = 1 sigma_max."""
    return karras_ramp(1 - t)


def sample_generator_sigma(batch: int, t_max: float = T_MAX, *, device=None,
                           rng: torch.Generator | None = None) -> torch.Tensor:
    """sigma for SiD's generator step: t ~ U[0, t_max/1000], then `karras_sigma` (shape ``[B]``).

    With t_max = 800, sigma lies in [0.002, 24.41].
    """
    t = torch.rand(batch, device=device, generator=rng) * (t_max / 1000)
    return karras_sigma(t)


def sample_denoising_sigma(batch: int, P_mean: float = P_MEAN, P_std: float = P_STD, *, device=None,
                           rng: torch.Generator | None = None) -> torch.Tensor:
    """EDM's training noise levels: ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1)."""
    return (P_mean + P_std * torch.randn(batch, device=device, generator=rng)).exp()


def edm_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def sid_normaliser(x_g: torch.Tensor, y_phi: torch.Tensor) -> torch.Tensor:
    """SiD's per-sample weight denominator mean|x_g - f_phi| (no gradient, clipped at 1e-5) -> ``[B]``."""
    return per_sample_mean((x_g - y_phi).abs()).detach().clamp_min(WEIGHT_FLOOR)


def bce_mean(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy with logits against a constant label, averaged over the whole batch and every
    logit position (a scalar, as ``nn.BCEWithLogitsLoss()`` in the official SiDA code)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _broadcast(scalar: torch.Tensor, batch: int) -> torch.Tensor:
    """A batch-level scalar as a per-sample ``[B]`` term (so its batch mean is the scalar)."""
    return scalar.reshape(1).expand(batch)


def evaluate(f: Denoiser, x_t: torch.Tensor, sigma: torch.Tensor, *, logvar: bool = False, logits: bool = False,
             **net_kwargs) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """f(x_t, sigma) with the optional outputs asked for: (D, log-variance [B] or None, logit map or None).
    Networks return (D[, logvar][, logits]) in this order (`return_logvar`, `return_logits`)."""
    out = f(x_t, sigma, **({"return_logvar": True} if logvar else {}), **({"return_logits": True} if logits else {}),
            **net_kwargs)
    out = out if isinstance(out, tuple) else (out,)
    return out[0], (out[1].flatten() if logvar else None), (out[-1] if logits else None)


# --------------------------------------------------------------------------- fake-score objectives


@dataclass(frozen=True)
class DenoisingLoss:
    """EDM denoising score matching (Karras et al. 2022, Eq. 2 with the weights of Table 1):

    loss = lambda(sigma) ||f(x_0 + sigma n, sigma) - x_0||^2,  ln sigma ~ N(P_mean, P_std^2), n ~ N(0, I).

    Fits f_psi to detached generator samples (Algorithm 1, fake-score update) and trains small teachers on
    data. ``sigma`` and ``noise`` may be given to make the call deterministic.

    With `uses_logvar` (EDM2 networks, ``f(x, sigma, return_logvar=True) -> (D, logvar)``) the loss is EDM2's
    uncertainty-weighted one (Karras et al. 2024, Eq. 8 and training/loss.py, EDM2Loss), summed over entries:
    lambda(sigma) / exp(logvar) ||D - x_0||^2 + n_x logvar, with n_x the number of entries of one sample.
    """
    sigma_data: float = SIGMA_DATA
    P_mean: float = P_MEAN
    P_std: float = P_STD
    uses_logvar: bool = False

    def sample_sigma(self, batch: int, *, device=None, rng: torch.Generator | None = None) -> torch.Tensor:
        return sample_denoising_sigma(batch, self.P_mean, self.P_std, device=device, rng=rng)

    def _draws(self, x_0: torch.Tensor, sigma, noise, rng) -> tuple[torch.Tensor, torch.Tensor]:
        if sigma is None:
            sigma = self.sample_sigma(x_0.shape[0], device=x_0.device, rng=rng)
        if noise is None:
            noise = torch.randn(x_0.shape, device=x_0.device, dtype=x_0.dtype, generator=rng)
        return as_batch_sigma(sigma, x_0), noise

    def denoise(self, f: Denoiser, x_t: torch.Tensor, sigma: torch.Tensor, x_0: torch.Tensor, logits: bool = False,
                **net_kwargs):
        """(per-sample denoising term, weight lambda(sigma) [B] divided by exp(logvar) if any, logit map or None)."""
        denoised, logvar, logit = evaluate(f, x_t, sigma, logvar=self.uses_logvar, logits=logits, **net_kwargs)
        weight = edm_weight(sigma.flatten(), self.sigma_data)
        if logvar is not None:
            weight = weight / logvar.exp()
        term = weight * per_sample_sum((denoised - x_0) ** 2)
        if logvar is not None:
            term = term + x_0[0].numel() * logvar
        return term, weight, logit

    def __call__(self, f: Denoiser, x_0: torch.Tensor, sigma: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None, *, rng: torch.Generator | None = None, **net_kwargs) -> Terms:
        sigma, noise = self._draws(x_0, sigma, noise, rng)
        return {"loss": self.denoise(f, x_0 + sigma * noise, sigma, x_0, **net_kwargs)[0]}


@dataclass(frozen=True)
class DenoisingWithDiscriminator(DenoisingLoss):
    """SiDA's fake-score objective (Zhou et al. 2025): the denoising term on x_g plus lsd/ls times the
    discriminator term, whose logit is f_psi's encoder (``f(x, sigma, return_logits=True)`` and
    ``f.logits(x, sigma)``). Real images get the same sigma and the same noise as x_g:

    D = lambda(sigma) (BCE(logit(x_real + sigma n), 1) + BCE(logit(x_g + sigma n), 0)) / 2,

    each BCE a mean over the whole batch and every logit position. Logged beside the loss: the denoising
    term, the discriminator term, both BCEs and the discriminator's accuracy on real and on fake images.
    With `uses_logvar` (SiDA-EDM2) both terms are weighted by 1/exp(logvar) as in `DenoisingLoss`.
    """
    discriminator_weight: float = 1.0     # lsd / ls of the official objective

    def __call__(self, f: Denoiser, x_0: torch.Tensor, sigma: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None, *, real: torch.Tensor, real_kwargs: dict | None = None,
                 rng: torch.Generator | None = None, **net_kwargs) -> Terms:
        sigma, noise = self._draws(x_0, sigma, noise, rng)
        denoise, weight, logit_fake = self.denoise(f, x_0 + sigma * noise, sigma, x_0, logits=True, **net_kwargs)
        logit_real = f.logits(real + sigma * noise, sigma, **(net_kwargs if real_kwargs is None else real_kwargs))
        bce_real, bce_fake = bce_mean(logit_real, 1.0), bce_mean(logit_fake, 0.0)
        discriminator = weight * (bce_real + bce_fake) / 2
        batch = x_0.shape[0]
        return {"loss": denoise + self.discriminator_weight * discriminator, "denoise": denoise,
                "discriminator": discriminator, "bce_real": _broadcast(bce_real.detach(), batch),
                "bce_fake": _broadcast(bce_fake.detach(), batch),
                "accuracy_real": per_sample_mean((logit_real.detach() > 0).to(x_0.dtype)),
                "accuracy_fake": per_sample_mean((logit_fake.detach() < 0).to(x_0.dtype))}


# --------------------------------------------------------------------------- generator objectives


@dataclass
class Denoised:
    """The denoisers at x_t = x_g + sigma n, as a generator objective sees them."""
    x_g: torch.Tensor                       # generator sample [B, ...]
    y_phi: torch.Tensor                     # f_phi(x_t): the teacher
    y_psi: torch.Tensor                     # f_psi(x_t): the fake score
    logits: torch.Tensor | None = None      # f_psi's discriminator logit map at x_t (SiDA)
    logvar: torch.Tensor | None = None      # f_psi's log-variance at sigma [B] (EDM2 networks)


@dataclass(frozen=True)
class GeneratorObjective:
    """A generator objective (Algorithm 1, generator update): per-sample terms of f_phi(x_t), f_psi(x_t), x_g.

    `terms` is the method's equation; the call draws sigma and noise (unless given), evaluates both
    denoisers at x_t = x_g + sigma n and, when `normalised`, divides every term by SiD's detached
    mean|x_g - f_phi|. **No stop-gradient is applied**: the gradient reaches x_g directly and through the
    inputs of f_phi and f_psi (their parameters stay frozen by the caller). A new method overrides `terms`
    (and sets `needs_logits` when it reads f_psi's discriminator logit).
    """
    normalised = True          # divide by SiD's mean|x_g - f_phi| (official sid_loss.py)
    needs_logits = False       # f_psi must also return its discriminator logit map
    needs_logvar = False       # f_psi must also return its log-variance

    def terms(self, d: Denoised) -> Terms:
        raise NotImplementedError

    def at(self, nimg: int) -> "GeneratorObjective":
        """The objective in force after `nimg` training images (schedules override this)."""
        return self

    def __call__(self, f_phi: Denoiser, f_psi: Denoiser, x_g: torch.Tensor, sigma: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None, *, t_max: float = T_MAX, rng: torch.Generator | None = None,
                 **net_kwargs) -> Terms:
        if sigma is None:
            sigma = sample_generator_sigma(x_g.shape[0], t_max, device=x_g.device, rng=rng)
        sigma = as_batch_sigma(sigma, x_g)
        if noise is None:
            noise = torch.randn(x_g.shape, device=x_g.device, dtype=x_g.dtype, generator=rng)
        x_t = x_g + sigma * noise
        y_phi = f_phi(x_t, sigma, **net_kwargs)
        y_psi, logvar, logits = evaluate(f_psi, x_t, sigma, logvar=self.needs_logvar, logits=self.needs_logits,
                                         **net_kwargs)
        terms = self.terms(Denoised(x_g, y_phi, y_psi, logits, logvar))
        if self.normalised:
            w = sid_normaliser(x_g, y_phi)
            terms = {name: value / w for name, value in terms.items()}
        return terms


@dataclass(frozen=True)
class NaiveL1(GeneratorObjective):
    """L1 = ||f_phi - f_psi||^2, the model-based Fisher divergence in x_0 units (paper Eq. 9).

    With f_psi held fixed its gradient is blind to where x_g sits: Proposition 4 shows it can be zero."""

    def terms(self, d: Denoised) -> Terms:
        return {"loss": per_sample_sum((d.y_phi - d.y_psi) ** 2)}


@dataclass(frozen=True)
class ProjectedL2(GeneratorObjective):
    """L2 = (f_phi - f_psi)^T (f_phi - x_g), projected score matching (Theorem 5, Eq. 17): one factor of the
    Fisher divergence replaced by its projection onto grad log q(x_t | x_g)."""

    def terms(self, d: Denoised) -> Terms:
        return {"loss": per_sample_sum((d.y_phi - d.y_psi) * (d.y_phi - d.x_g))}


@dataclass(frozen=True)
class SiD(GeneratorObjective):
    """SiD's generator loss L2 - alpha L1 = (f_phi - f_psi)^T ((f_phi - x_g) - alpha (f_phi - f_psi)) (Eq. 22),
    with L1 and L2 logged apart (the total changes sign all the time; its parts show convergence)."""
    alpha: float = 1.2

    def terms(self, d: Denoised) -> Terms:
        L2 = ProjectedL2().terms(d)["loss"]
        L1 = NaiveL1().terms(d)["loss"]
        return {"loss": L2 - self.alpha * L1, "L1": L1, "L2": L2}


@dataclass(frozen=True)
class DiffInstruct(GeneratorObjective):
    """Diff-Instruct (Luo et al. 2023): the score difference pushed through x_g.

    grad_theta = E[w(sigma) (S_psi - S_phi)(x_t) dx_t/dtheta]. With Tweedie, S_psi - S_phi = (f_psi - f_phi) /
    sigma^2, and with w(sigma) = sigma^2 the surrogate is sg(f_psi - f_phi)^T x_g. No gradient flows through
    the denoisers."""
    normalised = False

    def terms(self, d: Denoised) -> Terms:
        return {"loss": per_sample_sum((d.y_psi - d.y_phi).detach() * d.x_g)}


@dataclass(frozen=True)
class DMD(GeneratorObjective):
    """DMD's distribution-matching gradient (Yin et al. 2024, Eq. 7-8): the score difference of Diff-Instruct,
    normalised per sample by mean|x_g - f_phi|, applied as the surrogate sg(grad)^T x_g."""
    normalised = False

    def terms(self, d: Denoised) -> Terms:
        w = sid_normaliser(d.x_g, d.y_phi).reshape(-1, *([1] * (d.x_g.ndim - 1)))
        return {"loss": per_sample_sum(((d.y_psi - d.y_phi) / w).detach() * d.x_g)}


@dataclass(frozen=True)
class SiDA(SiD):
    """SiDA's generator objective (Zhou et al. 2025): the SiD term and the GAN term of f_psi's encoder,

    loss = 0.5 SiD + 0.5 (lsg_gan / lsg) n_x BCE(clip(logit(x_t), -10, 10), 1)   (both divided by mean|x_g - f_phi|)

    where n_x is the number of entries of one sample (C H W) and the BCE is a mean over the batch. Before
    `gan_after_nimg` training images the loss is the SiD term alone (official sida_training_loop.py)."""
    gan_weight: float = 1e-4              # lsg_gan / lsg of the official objective (0.01 / 100)
    gan_after_nimg: int = 200_000         # the GAN term joins after this many training images
    gan_active: bool = True               # set by `at`
    needs_logits = True

    def at(self, nimg: int) -> "SiDA":
        return dataclasses.replace(self, gan_active=nimg > self.gan_after_nimg)

    def terms(self, d: Denoised) -> Terms:
        terms = super().terms(d)
        batch = d.x_g.shape[0]
        gan = _broadcast(bce_mean(d.logits.clamp(-LOGIT_CLIP, LOGIT_CLIP), 1.0), batch)
        sid = terms["loss"]
        loss = 0.5 * sid + 0.5 * self.gan_weight * d.x_g[0].numel() * gan if self.gan_active else sid
        return {**terms, "loss": loss, "sid": sid, "gan": gan}


@dataclass(frozen=True)
class LogvarWeighted(GeneratorObjective):
    """SiDA-EDM2's override of any objective for EDM2 networks: every term of `inner` divided by exp(logvar)
    of f_psi at the generator's sigma (mingyuanzhou/SiD, sida_training_edm2/sida_loss_edm2.py)."""
    inner: GeneratorObjective = field(default_factory=SiD)
    needs_logvar = True

    @property
    def normalised(self) -> bool:
        return self.inner.normalised

    @property
    def needs_logits(self) -> bool:
        return self.inner.needs_logits

    def at(self, nimg: int) -> "LogvarWeighted":
        return dataclasses.replace(self, inner=self.inner.at(nimg))

    def terms(self, d: Denoised) -> Terms:
        scale = (-d.logvar).exp()
        return {name: value * scale for name, value in self.inner.terms(d).items()}


GENERATOR_OBJECTIVES: dict[str, type[GeneratorObjective]] = {
    "sid": SiD, "naive": NaiveL1, "projected": ProjectedL2, "diff_instruct": DiffInstruct, "dmd": DMD, "sida": SiDA,
}


def generator_objective(name: str, logvar: bool = False, **parameters) -> GeneratorObjective:
    """The objective called `name`, built from the `parameters` it has (alpha, gan_weight, ...); others are
    ignored, so one config resolves any objective. `logvar`: weighted for an EDM2 f_psi (`LogvarWeighted`)."""
    cls = GENERATOR_OBJECTIVES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    objective = cls(**{k: v for k, v in parameters.items() if k in fields})
    return LogvarWeighted(objective) if logvar else objective
