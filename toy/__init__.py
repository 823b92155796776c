"""Analytic SiD: exact Gaussian families, symbolic proofs, Monte Carlo checks and toy distillation."""
