"""Budgets: every limit stops a search with its best so far, the deadline
interrupts a round in flight, the PRM's context drops what it cannot read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from openr.search import STRATEGIES, Budget, run_strategy
from openr.search.strategies.beam_search import BeamSearchConfig
from openr.search.strategies.best_of_n import BestOfNConfig
from openr.search.strategies.dvts import DvtsConfig
from openr.search.strategies.mcts import MctsConfig
from tests.support.search_fakes import (
    PROBLEM,
    TOKENS_PER_STEP,
    FakeClock,
    FakePolicy,
    FakePRM,
    ShortContextPRM,
    answer_steps,
    run,
    score_by_last_id,
    tree_step,
)

pytestmark = pytest.mark.anyio


def test_token_cap_splits_what_is_left_over_the_samples():
    budget = Budget(max_tokens_total=100)
    assert budget.token_cap(512, samples=4) == 25
    budget.charge_tokens(98)
    assert budget.token_cap(512, samples=4) == 1
    assert Budget().token_cap(512, samples=4) == 512


@pytest.mark.parametrize("kind", ["tokens", "prm_calls", "time"])
async def test_every_budget_stops_beam_search_with_its_best_so_far(kind):
    clock = FakeClock()
    limits = {"tokens": {"max_tokens_total": 4 * TOKENS_PER_STEP}, "prm_calls": {"max_prm_calls": 4},
              "time": {"max_seconds": 0.5}}[kind]
    budget = Budget(**limits, clock=clock)
    policy, prm = FakePolicy(tree_step(eos_depth=5), on_call=clock.advance), FakePRM(score_by_last_id)
    config = BeamSearchConfig(n=4, beam_width=2, aggregation="prm_last_max")
    result = await run("beam_search", config, policy, prm, budget)
    assert (result.stop_reason, result.finish_reason) == (kind, "length")
    assert len(policy.calls) == 1
    # Depth 1 ran in full: its best child is the best so far.
    assert result.answer_text == "r.3"
    assert [c.steps for c in result.candidates] == [("r.3",), ("r.2",)]


@dataclass
class HangingPolicy(FakePolicy):
    """A FakePolicy whose call number `hang_at` (0-based) never returns, and
    that notes when that call is cancelled."""

    hang_at: int = 2
    cancelled: bool = False

    async def generate_steps(self, *args, **kwargs):
        if len(self.calls) == self.hang_at:
            self.calls.append({})
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return await super().generate_steps(*args, **kwargs)


@pytest.mark.parametrize("strategy, config", [
    ("beam_search", BeamSearchConfig(n=4, beam_width=2)),
    ("dvts", DvtsConfig(n=4, beam_width=2)),
    ("mcts", MctsConfig(n_children=2, num_simulations=8)),
])
async def test_the_deadline_cancels_a_round_in_flight_and_answers_with_the_last_finished_one(strategy, config):
    policy, prm = HangingPolicy(tree_step(eos_depth=6)), FakePRM(score_by_last_id)
    # The outer timeout only turns a broken deadline into a failure instead of a hang.
    result = await asyncio.wait_for(run_strategy(strategy, PROBLEM, policy, prm, config, Budget(max_seconds=0.2)),
                                    timeout=30)
    assert policy.cancelled and (result.stop_reason, result.finish_reason) == ("time", "length")
    assert result.candidates and all(len(c.steps) == 2 for c in result.candidates[:1])
    assert result.tokens_generated == sum(len(call.get("prefixes", [])) * call.get("n", 0)
                                          for call in policy.calls) * TOKENS_PER_STEP
    assert result.timing.policy_round_trips == len(policy.calls)  # the call cut off counts too


@dataclass
class TickingPRM(FakePRM):
    """A FakePRM each of whose calls takes `seconds` on `clock`."""

    clock: FakeClock = field(default_factory=FakeClock)
    seconds: float = 0.25

    async def score(self, question, candidates):
        self.clock.advance(self.seconds)
        return await super().score(question, candidates)


async def test_a_search_counts_the_seconds_it_awaited_the_policy_and_the_prm():
    clock = FakeClock()
    policy = FakePolicy(tree_step(eos_depth=3), on_call=clock.advance)  # 1 s per call
    prm = TickingPRM(score_by_last_id, clock=clock)
    result = await run("beam_search", BeamSearchConfig(n=4, beam_width=2), policy, prm, Budget(clock=clock))
    timing = result.timing
    assert (timing.policy_round_trips, timing.prm_round_trips) == (len(policy.calls), len(prm.calls)) == (3, 3)
    assert (timing.policy_seconds, timing.prm_seconds) == (3.0, 0.75)
    assert timing.wall_seconds == 3.75 and timing.other_seconds == 0.0  # nothing else moved the clock


async def test_without_a_time_limit_run_strategy_just_runs():
    policy, prm = FakePolicy(tree_step(eos_depth=3)), FakePRM(score_by_last_id)
    result = await run_strategy("beam_search", PROBLEM, policy, prm, BeamSearchConfig(n=4, beam_width=2), Budget())
    assert result.stop_reason is None and result.finish_reason == "stop"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
async def test_a_spent_budget_stops_every_strategy_before_any_call(strategy):
    clock = FakeClock()
    budget = Budget(max_seconds=1.0, clock=clock)
    clock.advance(2.0)
    policy, prm = FakePolicy(tree_step(eos_depth=2)), FakePRM(score_by_last_id)
    result = await run(strategy, STRATEGIES[strategy].config_type(), policy, prm, budget)
    assert (result.stop_reason, result.finish_reason, result.answer_text) == ("time", "length", "")
    assert policy.calls == [] and prm.calls == []


async def test_token_budget_truncates_samples_instead_of_overspending():
    budget = Budget(max_tokens_total=25)
    policy, prm = FakePolicy(answer_steps(["1", "2", "3", "4"])), FakePRM(lambda step: 0.5)
    result = await run("best_of_n", BestOfNConfig(n=4), policy, prm, budget)
    assert policy.calls[0]["max_tokens"] == 6
    assert result.tokens_generated == 24 and result.stop_reason == "tokens"
    assert all(c.truncated for c in result.candidates)


async def test_prm_budget_scores_only_what_it_allows():
    budget = Budget(max_prm_calls=2)
    policy, prm = FakePolicy(answer_steps(["1", "2", "3", "4"])), FakePRM(lambda step: 0.5)
    result = await run("best_of_n", BestOfNConfig(n=4), policy, prm, budget)
    assert len(prm.calls[0]) == 2 and result.prm_calls == 2
    assert len(result.candidates) == 2 and result.stop_reason == "prm_calls"


async def test_candidates_too_long_for_the_prm_are_dropped_and_the_search_says_so():
    """Beam search on a PRM that reads at most 2 steps: depth 3 cannot be scored,
    so the search returns what it had, cut by the PRM's context."""
    policy, prm = FakePolicy(tree_step(eos_depth=5)), ShortContextPRM(score_by_last_id, max_steps=2)
    result = await run("beam_search", BeamSearchConfig(n=4, beam_width=2, max_steps=4), policy, prm)
    assert result.stop_reason == "context" and result.finish_reason == "length"
    assert result.candidates and all(len(c.steps) == 2 for c in result.candidates)
    # the batch of depth 3 failed, then each of its candidates was tried alone
    assert [len(call) for call in prm.calls[-5:]] == [4, 1, 1, 1, 1]


async def test_a_search_whose_prompt_outgrows_the_prm_ends_with_nothing_ranked():
    policy, prm = FakePolicy(answer_steps(["1", "2"])), ShortContextPRM(lambda step: 0.5, max_steps=0)
    result = await run("best_of_n", BestOfNConfig(n=2), policy, prm)
    assert result.candidates == () and result.stop_reason == "context" and result.prm_calls == 2
