"""Denoiser networks: EDM's U-Nets (`edm`), their preconditioning wrappers (`precond`) and EDM2's
magnitude-preserving U-Net (`edm2`).

`NETWORKS` is every network class a file may name: EDM's wrappers plus EDM2's preconditioner (called ``Precond`` in
EDM2's own files). `full.store.network_file.build_network` looks names up here.
"""
from torch import nn

from full.nets.edm2 import EDM2Precond
from full.nets.precond import PRECONDITIONERS

NETWORKS: dict[str, type[nn.Module]] = {**PRECONDITIONERS, "EDM2Precond": EDM2Precond}
