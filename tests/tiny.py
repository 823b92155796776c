"""Tiny networks shared by the tests."""
import torch

from full.train_teacher import TeacherConfig, build_teacher


def tiny_teacher(label_dim=0, resolution=8, seed=0, dropout=0.0, channels=1):
    """An 8x8 DDPM++ EDMPrecond with 8 base channels, its zero-initialised output layers perturbed so that the
    network is not trivially linear."""
    torch.manual_seed(seed)
    net = build_teacher(TeacherConfig(model_channels=8, channel_mult=(1, 2), dropout=dropout), resolution, channels,
                        label_dim)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net
