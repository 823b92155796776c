"""ADA-style augmentation: exact geometry for known parameters and EDM's label layout and rates."""
import math

import pytest
import torch

from full.method.augment import augment, warp

Z = torch.zeros(3)
NO_SHIFT = torch.zeros(2, 3)


def test_probability_zero_is_the_identity():
    x = torch.randn(16, 3, 8, 8)
    y, labels = augment(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(x, y) and labels.shape == (16, 9) and not labels.any()


def test_quarter_turn_and_flips_are_exact_pixel_permutations():
    x = torch.randn(3, 2, 8, 8)
    quarter = warp(x, Z, Z, Z, torch.full((3,), math.pi / 2), Z, Z, NO_SHIFT)
    torch.testing.assert_close(quarter, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)
    ones = torch.ones(3)
    torch.testing.assert_close(warp(x, ones, Z, Z, Z, Z, Z, NO_SHIFT), x.flip(3))
    torch.testing.assert_close(warp(x, Z, ones, Z, Z, Z, Z, NO_SHIFT), x.flip(2))


def test_translation_by_one_pixel_shifts_the_content():
    x = torch.randn(3, 1, 8, 8)
    shift = torch.zeros(2, 3)
    shift[0] = 1 / (8 * 0.125)  # one pixel to the right, in EDM's translate_frac units
    torch.testing.assert_close(warp(x, Z, Z, Z, Z, Z, Z, shift)[..., 1:], x[..., :-1])


def test_isotropic_scale_by_two_zooms_in_about_the_centre():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 7:9, 7:9] = 1.0
    big = warp(x, Z[:1], Z[:1], torch.full((1,), 1 / 0.2), Z[:1], Z[:1], Z[:1], torch.zeros(2, 1))
    assert big.sum().item() == pytest.approx(4 * x.sum().item(), rel=0.05)
    assert big[..., 6:10, 6:10].min() > 0.5


def test_label_rates_follow_the_probability_multipliers():
    p = 0.4
    _, labels = augment(torch.randn(20_000, 1, 4, 4), p, torch.Generator().manual_seed(1))
    active = (labels != 0).float().mean(0)
    assert active[0].item() == pytest.approx(0.5, abs=0.02)      # xflip multiplier 1e8: always drawn, half flipped
    assert active[1].item() == pytest.approx(p / 2, abs=0.02)    # yflip
    assert active[2].item() == pytest.approx(p, abs=0.02)        # scale
    assert active[4].item() == pytest.approx(p, abs=0.02)        # rotation sin
    assert active[7].item() == pytest.approx(p, abs=0.02)        # translation x
    on = labels[:, 2][labels[:, 2] != 0]
    assert on.std().item() == pytest.approx(1.0, abs=0.05)       # scale label ~ N(0, 1) in log2 / 0.2 units
