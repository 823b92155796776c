"""Denoiser networks: EDM's U-Nets (`edm`), their preconditioning wrappers (`precond`) and EDM2's magnitude-preserving U-Net (`edm2`)."""
