"""Monte Carlo counterparts of the identities, for random parameters, against closed forms.

Each test also checks that the estimate resolves the closed form well enough that a wrong sign or
a factor of 2 would have failed.
"""
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import gaussians, mixtures, sigmas

from toy import montecarlo
from toy.families import Gaussian
from toy.montecarlo import MCCheck

N = 60_000


def assert_sharp(check: MCCheck) -> None:
    """The check passes, and where the sample resolves the closed form (|closed form| above twice the
    tolerance band, so a passing estimate cannot also sit within the band of a wrong value; a closed form
    of 0 up to float rounding, e.g. a teacher equal to the generator, is not resolved), a wrong sign or a
    factor of 2 fails."""
    assert check.passes(), check
    if abs(check.closed_form) > 2 * check.band():
        for wrong in (-check.closed_form, 2 * check.closed_form):
            assert not MCCheck(check.name, check.estimate, check.stderr, wrong).passes(), check


@given(mixtures(), sigmas)
def test_tweedie(family, sigma):
    assert_sharp(montecarlo.tweedie_check(family, sigma, N))


def test_tweedie_with_a_wrong_sign_fails():
    from toy.targets import make_target
    mixture = make_target("overlap2d").double()
    sigma = 0.9
    x_t = mixture.sample_noisy(N, sigma, torch.Generator().manual_seed(0))
    wrong = x_t - sigma ** 2 * montecarlo.autograd_score(mixture, x_t, sigma)
    estimate = (wrong * x_t).sum(1)
    check = MCCheck("wrong", estimate.mean().item(), (estimate.std() / N ** 0.5).item(),
                    montecarlo.second_moment(mixture))
    assert not check.passes()


@given(mixtures(), sigmas, st.integers(0, 100))
def test_score_projection_both_sides(family, sigma, seed):
    for check in montecarlo.score_projection_checks(family, sigma, N, seed):
        assert_sharp(check)


@given(gaussians(2), gaussians(2), sigmas)
@example(Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)),
         Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)), 1.0)  # teacher = generator:
# the divergence is 0 and the closed form float noise
def test_projected_score_matching(teacher, generator, sigma):
    assert_sharp(montecarlo.projected_score_matching_check(teacher, generator, sigma, N))
