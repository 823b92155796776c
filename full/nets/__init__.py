"""Denoiser networks: EDM's U-Nets (`edm`), their preconditioning wrappers (`precond`) and EDM2's
magnitude-preserving U-Net (`edm2`).

`NETWORKS` is every network class a file may name: EDM's wrappers plus EDM2's preconditioner (called ``Precond`` in
EDM2's own files). `full.store.network_file.build_network` looks names up here. `same_layout` says whether weights
fit a network.
"""
from torch import nn

from full.nets.edm2 import EDM2Precond
from full.nets.precond import PRECONDITIONERS

NETWORKS: dict[str, type[nn.Module]] = {**PRECONDITIONERS, "EDM2Precond": EDM2Precond}


def same_layout(mine: dict, theirs: dict) -> bool:
    """Whether two state dicts have the same entries, in the same order, with the same shapes (one architecture)."""
    return list(mine) == list(theirs) and all(mine[k].shape == theirs[k].shape for k in mine)
