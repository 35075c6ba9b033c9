"""Adaptive stopping: the Beta stopping rule against posteriors worked out by
hand, and majority_vote / best_of_n stopping (or not) on fake samples."""

from __future__ import annotations

import math

import pytest

from openr.search import SearchConfigError, parse_search
from openr.search.aggregation import AGGREGATIONS
from openr.search.candidates import Candidate
from openr.search.strategies.best_of_n import BestOfNConfig
from openr.search.strategies.majority_vote import MajorityVoteConfig
from openr.search.waves import FIRST_WAVE_SAMPLES, WAVE_SAMPLES, leader_confidence, leader_stays_ahead
from tests.support.search_fakes import TOKENS_PER_STEP, FakePolicy, FakePRM, answer_steps, run

pytestmark = pytest.mark.anyio


# For integer votes, P(p > 1/2) under Beta(a, b) is P(Binomial(a + b - 1, 1/2) <= a - 1).
@pytest.mark.parametrize(("leader", "runner_up", "posterior"), [
    (0, 0, 0.5),                       # no evidence: a coin flip
    (4, 0, 1 - 0.5**5),                # Beta(5, 1): 0.96875
    (3, 1, 26 / 32),                   # Beta(4, 2): P(Bin(5) <= 3)
    (5, 1, 120 / 128),                 # Beta(6, 2): P(Bin(7) <= 5)
    (6, 2, 1 - (1 + 9 + 36) / 512),    # Beta(7, 3): P(Bin(9) <= 6)
    (1.5, 0, 1 - 0.5**2.5),            # Beta(2.5, 1): the CDF is x**2.5
])
def test_posterior_that_the_leader_stays_ahead(leader, runner_up, posterior):
    assert math.isclose(leader_stays_ahead(leader, runner_up), posterior, rel_tol=1e-9)


def test_confidence_counts_votes_or_prm_weighted_votes():
    def solution(answer: str, score: float) -> Candidate:
        return Candidate(steps=(f"\\boxed{{{answer}}}",), aggregate_score=score, finished=True, answer=answer)

    pool = [solution("7", 0.9), solution("7", 0.9), solution("7", 0.9), solution("3", 0.1)]
    assert math.isclose(leader_confidence(pool, AGGREGATIONS["majority_vote"]), 26 / 32)  # 3 votes to 1
    # Weighted: 2.7 against 0.1, Beta(3.7, 1.1), well past what 3 to 1 votes give.
    assert leader_confidence(pool, AGGREGATIONS["prm_min_max"]) > 0.9
    assert leader_confidence([Candidate(steps=("no answer",), finished=True)], AGGREGATIONS["majority_vote"]) == 0


async def test_unanimous_first_wave_stops_confident_and_spends_less():
    policy = FakePolicy(answer_steps(["7"] * 16))
    result = await run("majority_vote", MajorityVoteConfig(n=16, adaptive=True), policy, prm=None)
    assert [call["n"] for call in policy.calls] == [FIRST_WAVE_SAMPLES]
    assert result.stop_reason == "confident" and result.finish_reason == "stop"
    assert result.tokens_generated == FIRST_WAVE_SAMPLES * 2 * TOKENS_PER_STEP
    assert result.decisions["adaptive"] == {"samples": 4, "waves": 1, "confidence": 0.9688}
    fixed = await run("majority_vote", MajorityVoteConfig(n=16), FakePolicy(answer_steps(["7"] * 16)), prm=None)
    assert fixed.tokens_generated == 4 * result.tokens_generated and fixed.stop_reason is None


async def test_split_votes_keep_sampling_in_waves_until_settled():
    # 3:1 after the first wave (0.81), 5:1 after the second (0.94), 7:1 after the third (0.98).
    policy = FakePolicy(answer_steps(["7", "7", "3", "7"] + ["7"] * 12))
    result = await run("majority_vote", MajorityVoteConfig(n=16, adaptive=True), policy, prm=None)
    assert [call["n"] for call in policy.calls] == [FIRST_WAVE_SAMPLES, WAVE_SAMPLES, WAVE_SAMPLES]
    assert (result.stop_reason, result.candidates[0].answer) == ("confident", "7")


async def test_an_unsettled_vote_spends_all_n_and_seeds_never_repeat():
    policy = FakePolicy(answer_steps(["1", "2", "3", "4", "5", "6"]))
    result = await run("majority_vote", MajorityVoteConfig(n=6, adaptive=True, seed=10), policy, prm=None)
    assert [call["n"] for call in policy.calls] == [4, 2]
    assert [call["seed"] for call in policy.calls] == [10, 14]
    assert result.stop_reason is None and len(result.candidates) == 6


async def test_best_of_n_weighs_votes_by_the_prm():
    # Every step scores 0.5: four agreeing solutions weigh 2 votes (Beta(3, 1): 0.875),
    # six weigh 3 (0.9375), eight weigh 4 (0.96875), which settles it. (prm_mean_max:
    # its scores are no probability, so the votes alone decide.)
    policy, prm = FakePolicy(answer_steps(["7"] * 16)), FakePRM(lambda step: 0.5)
    result = await run("best_of_n", BestOfNConfig(n=16, adaptive=True, aggregation="prm_mean_max"), policy, prm)
    assert [call["n"] for call in policy.calls] == [4, 2, 2]
    assert len(prm.calls) == 3 and result.prm_calls == 8
    assert result.stop_reason == "confident"
    trusted = await run("best_of_n", BestOfNConfig(n=16, adaptive=True), FakePolicy(answer_steps(["7"] * 16)),
                        FakePRM(lambda step: 1.0))
    assert trusted.decisions["adaptive"]["samples"] == 4


def solution(answer: str, score: float, finished: bool = True) -> Candidate:
    return Candidate(steps=(f"\\boxed{{{answer}}}",), aggregate_score=score, finished=finished, answer=answer)


def test_agreeing_solutions_the_prm_believes_settle_the_answer_without_a_vote_majority():
    two_sound = [solution("7", 0.85), solution("7", 0.85), solution("3", 0.02), solution("5", 0.3)]
    # 1 - 0.15 * 0.15 = 0.9775; votes alone (1.7 against 0.3, Beta(2.7, 1.3)) give about 0.8.
    assert math.isclose(leader_confidence(two_sound, AGGREGATIONS["prm_min_max"]), 1 - 0.15**2)
    assert math.isclose(leader_confidence(two_sound, AGGREGATIONS["prm_prod_vote"]), 1 - 0.15**2)
    assert leader_confidence(two_sound, AGGREGATIONS["prm_mean_max"]) < 0.9  # a mean of step scores is no probability
    one_sound = [solution("7", 0.85), solution("3", 0.02)]
    assert math.isclose(leader_confidence(one_sound, AGGREGATIONS["prm_min_max"]), 0.85)
    # another answer the PRM believes (above 1/2) takes the verification away; the votes remain
    contested = two_sound + [solution("3", 0.6)]
    assert leader_confidence(contested, AGGREGATIONS["prm_min_max"]) == pytest.approx(
        leader_stays_ahead(1.7, 0.62), rel=1e-9)
    unfinished = [solution("7", 0.99, finished=False), solution("7", 0.99, finished=False)]
    assert leader_confidence(unfinished, AGGREGATIONS["prm_min_max"]) < 0.9


async def test_best_of_n_stops_once_the_prm_verifies_two_agreeing_solutions():
    # Answers 3, 7, 5, 7, ...: the solutions answering 7 score 0.85 at every step, the rest 0.2.
    answers = ["3", "7", "5", "7"] * 4
    sound = {f"try {i}" for i, a in enumerate(answers) if a == "7"} | {"so \\boxed{7}"}
    def scores(step):
        return 0.85 if step in sound else 0.2
    result = await run("best_of_n", BestOfNConfig(n=16, adaptive=True), FakePolicy(answer_steps(answers)),
                       FakePRM(scores))
    assert result.stop_reason == "confident" and result.candidates[0].answer == "7"
    assert result.decisions["adaptive"]["samples"] == FIRST_WAVE_SAMPLES
    by_mean = await run("best_of_n", BestOfNConfig(n=16, adaptive=True, aggregation="prm_mean_max"),
                        FakePolicy(answer_steps(answers)), FakePRM(scores))
    assert by_mean.decisions["adaptive"]["samples"] > FIRST_WAVE_SAMPLES


@pytest.mark.parametrize(("options", "field"), [
    ({"strategy": "majority_vote", "adaptive": "yes"}, "adaptive"),
    ({"strategy": "best_of_n", "confidence": 0.5}, "confidence"),
    ({"strategy": "best_of_n", "confidence": 1.5}, "confidence"),
    ({"strategy": "majority_vote", "confidence": "high"}, "confidence"),
    ({"strategy": "beam_search", "adaptive": True}, "adaptive"),
])
def test_bad_adaptive_options_are_named(options, field):
    with pytest.raises(SearchConfigError) as err:
        parse_search(options)
    assert err.value.field == field
