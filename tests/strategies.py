"""Hypothesis strategies for random closed-form families."""
import torch
from hypothesis import strategies as st

from toy.families import Gaussian, GaussianMixture


@st.composite
def spd_matrices(draw, dim: int, low: float = 0.2, high: float = 2.0) -> torch.Tensor:
    """A random symmetric positive-definite matrix with eigenvalues in [low, high]."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    eig = torch.tensor(draw(st.lists(st.floats(low, high), min_size=dim, max_size=dim)), dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(eig) @ q.T


@st.composite
def mixtures(draw, max_dim: int = 3, max_components: int = 3) -> GaussianMixture:
    dim = draw(st.integers(1, max_dim))
    k = draw(st.integers(1, max_components))
    weights = torch.tensor(draw(st.lists(st.floats(0.2, 1.0), min_size=k, max_size=k)), dtype=torch.float64)
    means = torch.tensor(draw(st.lists(st.lists(st.floats(-2, 2), min_size=dim, max_size=dim), min_size=k, max_size=k)),
                         dtype=torch.float64)
    covs = torch.stack([draw(spd_matrices(dim)) for _ in range(k)])
    a = draw(st.sampled_from([1.0, 0.8]))
    return GaussianMixture(weights, means, covs, a=a)


@st.composite
def gaussians(draw, dim: int) -> Gaussian:
    mean = torch.tensor(draw(st.lists(st.floats(-1.5, 1.5), min_size=dim, max_size=dim)), dtype=torch.float64)
    return Gaussian(mean, draw(spd_matrices(dim)))


sigmas = st.floats(0.3, 3.0)
