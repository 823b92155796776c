"""Exponential moving average of network weights with EDM's ramp-up (Karras et al. 2022, Appendix F; SiD's loop)."""
from __future__ import annotations

import torch


def ema_beta(batch: int, cur_nimg: int, ema_Mimg: float) -> float:
    """EMA decay per step: half-life min(ema * 1e6, 0.05 cur_nimg) images, beta = 0.5^(batch / half-life);
    beta = 0 at the start, so the average begins as a copy."""
    halflife = min(ema_Mimg * 1e6, cur_nimg * 0.05)
    return 0.5 ** (batch / max(halflife, 1e-8))


@torch.no_grad()
def ema_update(average: torch.nn.Module, net: torch.nn.Module, beta: float) -> None:
    """p_avg <- beta p_avg + (1 - beta) p for every parameter (one fused lerp over the lists); buffers copied."""
    torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in net.parameters()], 1.0 - beta)
    for b_avg, b in zip(average.buffers(), net.buffers()):
        b_avg.copy_(b)
