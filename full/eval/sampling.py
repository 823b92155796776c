"""Images from seeds: per-seed latents and labels (EDM's convention), one step of G or the teacher's sampler.

Every image is a function of its seed alone: a `torch.Generator` on the device, seeded with seed mod 2^32,
draws the latent [C, R, R] and then the class label, so the output does not depend on the batch size or on
how torchrun shards the seeds over ranks. CPU and CUDA generators give different numbers.
"""
from __future__ import annotations

import torch

from full.method.generator import SIGMA_INIT, one_step


def seed_latents(seeds: list[int], img_shape: tuple[int, int, int], label_dim: int, device: torch.device,
                 class_idx: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-seed latents and one-hot labels: latent first, then the label, from the seed's own generator."""
    z, idx = [], []
    for seed in seeds:
        g = torch.Generator(device).manual_seed(seed % (1 << 32))
        z.append(torch.randn(img_shape, generator=g, device=device))
        if label_dim:
            idx.append(torch.randint(label_dim, (1,), generator=g, device=device))
    if not label_dim:
        return torch.stack(z), None
    labels = torch.cat(idx) if class_idx is None else torch.full((len(seeds),), class_idx, device=device)
    return torch.stack(z), torch.nn.functional.one_hot(labels, label_dim).float()


def sample_images(net: torch.nn.Module, seeds: list[int], *, teacher_steps: int | None = None,
                  class_idx: int | None = None, sigma_init: float | None = None) -> torch.Tensor:
    """Images in [-1, 1] for `seeds`: one step of G, or `teacher_steps` Heun steps of a teacher."""
    from full.eval.sampler import edm_sampler
    device = next(net.parameters()).device
    shape = (net.img_channels, net.img_resolution, net.img_resolution)
    z, labels = seed_latents(seeds, shape, net.label_dim, device, class_idx)
    with torch.no_grad():
        if teacher_steps:
            return edm_sampler(net, z, labels, num_steps=teacher_steps)
        sigma_init = sigma_init if sigma_init is not None else float(getattr(net, "provenance", {}).get("sigma_init", SIGMA_INIT))
        return one_step(net, z, labels, sigma_init)
