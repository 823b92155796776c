"""ADA-style geometric augmentation for the f_psi step, with EDM's 9-dimensional augment labels.

EDM's released CIFAR-10/FFHQ/AFHQ teachers were trained with augmentation probability p and the
multipliers xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1 (Karras et al. 2022,
Appendix F.2, after ADA, Karras et al. 2020). Each network takes the transform's parameters as
``augment_labels`` (map_augment), laid out as

    [xflip, yflip, scale, cos(rot) - 1, sin(rot), aniso * cos(r), aniso * sin(r), tx, ty].

SiD fits f_psi (a copy of the teacher) to augmented generator samples with those labels. This module
draws the parameters with EDM's distributions and applies one composed affine warp with bilinear
resampling and reflection padding (EDM additionally oversamples with a sym6 wavelet filter).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCALE_STD = 0.2          # log2 std of isotropic scaling
ANISO_STD = 0.2          # log2 std of anisotropic scaling
ANISO_ROTATE_PROB = 0.5  # probability of anisotropic scaling in a rotated frame
TRANSLATE_STD = 0.125    # std of translation, relative to the image size


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    c, s = theta.cos(), theta.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero], -1), torch.stack([zero, sy], -1)], -2)


@dataclass
class Transform:
    """Per-image transform parameters (each ``[N]``; ``translate`` is ``[2, N]`` in units of TRANSLATE_STD * size)."""
    xflip: torch.Tensor
    yflip: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor
    aniso: torch.Tensor
    aniso_frame: torch.Tensor
    translate: torch.Tensor

    def labels(self) -> torch.Tensor:
        """EDM's 9-d augment labels ``[N, 9]`` (the layout in the module docstring)."""
        r, a = self.rotation, self.aniso
        return torch.stack([self.xflip, self.yflip, self.scale, r.cos() - 1, r.sin(), a * self.aniso_frame.cos(),
                            a * self.aniso_frame.sin(), self.translate[0], self.translate[1]], dim=1)

    def subset(self, keep: torch.Tensor) -> "Transform":
        return Transform(*(getattr(self, f.name)[..., keep] for f in dataclasses.fields(self)))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return warp(images, self.xflip, self.yflip, self.scale, self.rotation, self.aniso, self.aniso_frame,
                    self.translate)


def draw_transform(n: int, p: float, rng: torch.Generator | None = None, device=None) -> Transform:
    """Draw the parameters of n transforms with EDM's distributions and probability multiplier p."""

    def rand(*shape):
        return torch.rand(shape, generator=rng, device=device)

    def randn(*shape):
        return torch.randn(shape, generator=rng, device=device)

    def gate(values, multiplier):
        return torch.where(rand(n) < multiplier * p, values, torch.zeros_like(values))

    xflip = gate(torch.randint(2, (n,), generator=rng, device=device).float(), 1e8)
    yflip = gate(torch.randint(2, (n,), generator=rng, device=device).float(), 1.0)
    scale = gate(randn(n), 1.0)
    rotation = gate((rand(n) * 2 - 1) * math.pi, 1.0)
    aniso = gate(randn(n), 1.0)
    aniso_frame = (rand(n) * 2 - 1) * math.pi
    aniso_frame = torch.where(rand(n) < ANISO_ROTATE_PROB, aniso_frame, torch.zeros_like(aniso_frame))
    translate = torch.where(rand(1, n) < p, randn(2, n), torch.zeros(2, n, device=device))
    return Transform(xflip, yflip, scale, rotation, aniso, aniso_frame, translate)


def augment(images: torch.Tensor, p: float, rng: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment NCHW images with probability multiplier p; returns (images, augment_labels [N, 9])."""
    transform = draw_transform(images.shape[0], p, rng, images.device)
    return transform(images), transform.labels()


def warp(images: torch.Tensor, xflip, yflip, scale, rotation, aniso, aniso_frame, translate) -> torch.Tensor:
    """Apply given per-image transform parameters (each ``[N]``; translate ``[2, N]`` in units of
    TRANSLATE_STD * size): flips, then one affine warp about the image centre."""
    n, _, h, w = images.shape
    dev = images.device
    # Flips are exact pixel permutations.
    images = torch.where(xflip.view(n, 1, 1, 1) > 0, images.flip(3), images)
    images = torch.where(yflip.view(n, 1, 1, 1) > 0, images.flip(2), images)

    # Forward map in pixel units about the image centre, composed in EDM's order (scale, rotation,
    # anisotropy, then translation; rotations by -angle as EDM's inverse matrices imply):
    # x_out = R(-r) S(a, 1/a) R(r) R(-rot) S(s) x_in + t.
    s = (scale * SCALE_STD).exp2()
    a = (aniso * ANISO_STD).exp2()
    forward = (_rotation(-aniso_frame) @ _scaling(a, 1 / a) @ _rotation(aniso_frame) @ _rotation(-rotation)
               @ _scaling(s, s))
    shift = torch.stack([translate[0] * w * TRANSLATE_STD, translate[1] * h * TRANSLATE_STD], -1)
    # grid_sample needs the inverse map in normalised coordinates [-1, 1] (x scaled by w/2, y by h/2).
    inverse = torch.linalg.inv(forward)
    to_norm = torch.diag(torch.tensor([2 / w, 2 / h], device=dev))
    to_pix = torch.diag(torch.tensor([w / 2, h / 2], device=dev))
    theta_lin = to_norm @ inverse @ to_pix
    theta_off = -(to_norm @ inverse @ shift.unsqueeze(-1)).squeeze(-1)
    theta = torch.cat([theta_lin, theta_off.unsqueeze(-1)], dim=-1)
    identity = (scale == 0) & (rotation == 0) & (aniso == 0) & (translate == 0).all(0)
    if not identity.all():
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        images = torch.where(identity.view(n, 1, 1, 1), images, warped)
    return images

