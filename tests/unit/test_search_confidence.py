"""DeepConf's confidence measures against values worked out by hand, and the
monitor that halts a sample online."""

from __future__ import annotations

import math

import pytest

from openr.contracts import Step
from openr.search.confidence import (
    MEASURES,
    RunningMonitor,
    SampleTokens,
    below,
    confidence_score,
    group_confidences,
    lowest_group,
    mean_confidence,
    min_logprob,
    percentile,
    tail_confidence,
    token_confidence,
    token_confidences,
)


def test_token_confidence_is_minus_the_mean_of_the_top_k_logprobs():
    assert token_confidence(-0.1, [-0.1, -2.0, -3.0]) == pytest.approx(1.7)  # (0.1 + 2 + 3) / 3


def test_without_top_k_a_token_confidence_is_minus_its_own_logprob():
    assert token_confidence(-0.25, ()) == 0.25


def test_the_end_of_text_token_without_top_k_is_left_out_of_a_sample_with_top_k():
    assert token_confidences([-0.5, -1.0, -0.2], [[-0.5, -4.5], [-1.0, -2.0]]) == pytest.approx([2.5, 1.5])
    assert token_confidences([-0.5, -1.0], []) == pytest.approx([0.5, 1.0])


def test_groups_slide_one_token_at_a_time():
    assert group_confidences([1.0, 2.0, 3.0, 6.0], 2) == pytest.approx([1.5, 2.5, 4.5])
    assert lowest_group([4.0, 2.0, 3.0, 6.0], 2) == pytest.approx(2.5)


def test_a_sample_shorter_than_the_window_is_one_group():
    assert group_confidences([1.0, 2.0, 6.0], 8) == pytest.approx([3.0])
    assert lowest_group([], 8) == 0.0


def test_tail_mean_and_min_logprob():
    confidences = [1.0, 2.0, 3.0, 6.0]
    assert tail_confidence(confidences, 2) == pytest.approx(4.5)
    assert tail_confidence(confidences, 10) == pytest.approx(3.0)
    assert mean_confidence(confidences) == pytest.approx(3.0)
    assert min_logprob([-0.1, -2.5, -0.3]) == -2.5


def test_measures_read_a_sample_and_vote_with_a_positive_weight():
    sample = SampleTokens([-0.1, -2.0, -0.3], [[-0.1, -3.1], [-2.0, -0.2], [-0.3, -1.3]])  # confidences 1.6 1.1 0.8
    assert MEASURES["lowest_group"].value(sample, 2, 1) == pytest.approx(0.95)
    assert MEASURES["tail"].value(sample, 2, 1) == pytest.approx(0.8)
    assert MEASURES["mean"].value(sample, 2, 1) == pytest.approx(3.5 / 3)
    assert MEASURES["min_logprob"].value(sample, 2, 1) == -2.0
    assert MEASURES["min_logprob"].weight(-2.0) == pytest.approx(math.exp(-2.0))
    step = Step("x", 3, "eos", -2.4, (-0.1, -2.0, -0.3), ((-0.1, -3.1), (-2.0, -0.2), (-0.3, -1.3)))
    assert confidence_score(step, window=2) == pytest.approx(0.95)


def test_percentile_interpolates_between_ranks_as_numpy_does():
    assert percentile([4.0, 1.0, 3.0, 2.0], 10) == pytest.approx(1.3)
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    assert percentile([5.0], 10) == 5.0


def test_the_group_monitor_halts_once_a_full_window_falls_below_the_threshold():
    monitor = RunningMonitor("lowest_group", threshold=2.0, window=2)
    # token confidences 3, 2, 1: windows (3+2)/2 = 2.5, then (2+1)/2 = 1.5 < 2
    assert [monitor(-0.1, [-3.0]), monitor(-0.1, [-2.0]), monitor(-0.1, [-1.0])] == [False, False, True]
    assert monitor.halted_at == 3


def test_a_few_hesitant_tokens_before_a_full_window_never_halt_a_sample():
    monitor = RunningMonitor("lowest_group", threshold=2.0, window=4)
    assert not any(monitor(-0.1, [-0.1]) for _ in range(3))  # confidence 0.1, but only 3 of 4 tokens
    assert monitor(-0.1, [-0.1])


def test_the_min_logprob_monitor_halts_at_the_first_less_likely_token():
    monitor = RunningMonitor("min_logprob", threshold=-1.0)
    assert [monitor(-0.5, []), monitor(-0.9, []), monitor(-1.5, [])] == [False, False, True]


def test_a_value_equal_to_the_threshold_up_to_rounding_is_not_below_it():
    assert not below(6.9356 - 1e-9, 6.9356)  # the same tokens, scored in another batch
    assert below(6.93, 6.9356)


def test_measures_that_can_rise_again_cannot_halt_online():
    with pytest.raises(ValueError):
        RunningMonitor("tail", 1.0)
