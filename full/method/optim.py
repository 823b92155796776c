"""Adam for SiD's two networks, without a first-moment buffer when beta1 = 0.

SiD updates f_psi with Adam betas (0, 0.999) and G with (g_beta1, 0.999), g_beta1 = 0 in every preset but
FFHQ's (official sid_train.py). With beta1 = 0 Adam's first moment is the gradient itself (Kingma & Ba 2015,
Algorithm 1: m_t = beta1 m_{t-1} + (1 - beta1) g_t = g_t), so keeping it costs one more copy of the network
(213 MiB for CIFAR-10's DDPM++) for nothing. `adam` returns `MomentFreeAdam` then: torch's fused Adam kernel
with the gradients standing in for the first moment, so the update is the same as torch's fused Adam, bit for
bit, with one buffer fewer. With beta1 > 0, or where the fused kernel is missing, it is torch's Adam.
"""
from __future__ import annotations

import torch


class MomentFreeAdam(torch.optim.Optimizer):
    """Adam with beta1 = 0: theta <- theta - lr g / (sqrt(v / (1 - beta2^t)) + eps), v <- beta2 v + (1 - beta2) g^2."""

    def __init__(self, params, lr: float, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, beta2=beta2, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("MomentFreeAdam takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads = [p.grad for p in params]
            steps = [self.state[p]["step"] for p in params]
            torch._foreach_add_(steps, 1)
            # The kernel's first moment is lerp(m, g, 1 - beta1) = g for beta1 = 0: the gradient buffer serves.
            torch._fused_adam_(params, grads, grads, [self.state[p]["exp_avg_sq"] for p in params], [], steps,
                               lr=group["lr"], beta1=0.0, beta2=group["beta2"], weight_decay=0.0, eps=group["eps"],
                               amsgrad=False, maximize=False)


def adam(params, lr: float, beta1: float, eps: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam(lr, betas=(beta1, 0.999), eps): moment-free when beta1 = 0, fused where torch has the kernel."""
    params = list(params)
    fused = device.type in ("cpu", "cuda")
    if beta1 == 0 and fused:
        return MomentFreeAdam(params, lr=lr, eps=eps)
    return torch.optim.Adam(params, lr=lr, betas=(float(beta1), 0.999), eps=eps, **({"fused": True} if fused else {}))
