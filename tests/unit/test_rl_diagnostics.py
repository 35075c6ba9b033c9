"""The RL diagnostics measure what they claim: agreement of gradients, samples
that teach nothing, and how much of the returns a critic explains."""

from __future__ import annotations

import pytest
import torch

from openr.rl.diagnostics import explained_variance, gradient_cosine, split_halves, zero_advantage_share


def test_gradient_cosine_of_agreeing_opposite_and_unrelated_gradients():
    g = torch.tensor([1.0, 2.0, -1.0])
    assert gradient_cosine(g, 3 * g) == pytest.approx(1.0)
    assert gradient_cosine(g, -g) == pytest.approx(-1.0)
    assert gradient_cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0])) == 0.0
    assert gradient_cosine(g, torch.zeros(3)) == 0.0


def test_signal_buried_in_noise_has_a_small_cosine():
    generator = torch.Generator().manual_seed(0)
    signal = torch.randn(100_000, generator=generator)
    noisy = [signal * 0.1 + torch.randn(100_000, generator=generator) for _ in range(2)]
    clean = [signal + 0.1 * torch.randn(100_000, generator=generator) for _ in range(2)]
    assert gradient_cosine(*noisy) == pytest.approx(0.01, abs=0.01)
    assert gradient_cosine(*clean) > 0.95


def test_halves_hold_whole_groups():
    first, second = split_halves(episodes=12, group_size=3)
    assert first == [0, 1, 2, 6, 7, 8] and second == [3, 4, 5, 9, 10, 11]


def test_zero_advantage_share_counts_samples_with_no_signal():
    assert zero_advantage_share([[0.0, 0.0], [0.5, -0.1], [0.0], [1e-13]]) == 0.75
    assert zero_advantage_share([]) == 0.0


def test_explained_variance_of_perfect_mean_and_bad_critics():
    targets = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert explained_variance(targets.clone(), targets) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 1.5), targets) == pytest.approx(0.0)
    assert explained_variance(-targets, targets) < 0
    assert explained_variance(torch.zeros(3), torch.ones(3)) == 0.0  # constant returns: nothing to explain
