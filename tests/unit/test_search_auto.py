"""strategy "auto": the decision on a fixed table, the table's JSON form, and
runs that answer from the probe or hand over to the chosen strategy."""

from __future__ import annotations

import pytest

from openr.search import parse_search
from openr.search.auto import DEFAULT_TABLE, AutoConfig, AutoTable, AutoTier, decide
from tests.support.search_fakes import FakePolicy, FakePRM, answer_steps, run

pytestmark = pytest.mark.anyio

TABLE = AutoTable(tiers=(AutoTier(0, "best_of_n", {"n": 8, "adaptive": True}),
                         AutoTier(1000, "particle_filtering", {"n": 4}),
                         AutoTier(4000, "beam_search", {"n": 16, "beam_width": 4})),
                  settled_confidence=0.9, effort_tokens={"low": 300, "medium": 1000, "high": 5000}, source="test")


@pytest.mark.parametrize(("tokens", "confidence", "has_prm", "strategy", "options"), [
    (5000, 0.95, True, None, {}),                                           # settled: the probe answers
    (500, 0.6, True, "best_of_n", {"n": 8, "adaptive": True}),              # below the second tier
    (10, 0.6, True, "best_of_n", {"n": 8, "adaptive": True}),               # below every tier: the first
    (1000, 0.89, True, "particle_filtering", {"n": 4}),                     # exactly the second tier
    (4000, 0.5, True, "beam_search", {"n": 16, "beam_width": 4}),
    (None, 0.5, True, "beam_search", {"n": 16, "beam_width": 4}),           # no budget: the top tier
    (4000, 0.5, False, "majority_vote", {"n": 16, "adaptive": True}),       # no PRM: voting at that size
])
def test_decision_on_a_fixed_table(tokens, confidence, has_prm, strategy, options):
    choice = decide(TABLE, tokens, confidence, has_prm)
    assert (choice.strategy, choice.options) == (strategy, options)
    assert ("settled" if strategy is None else "unsettled") in choice.why


def test_the_table_round_trips_through_json_and_bad_tables_are_refused():
    again = AutoTable.from_json(TABLE.to_json(), source="test")
    assert again == TABLE
    bad = TABLE.to_json() | {"tiers": [{"min_tokens": 0, "strategy": "beam_search", "options": {"n": 6}}]}
    with pytest.raises(ValueError, match="here.json"):
        AutoTable.from_json(bad, source="here.json")
    with pytest.raises(ValueError, match="not an auto table"):
        AutoTable.from_json({"tiers": [{"strategy": "cot"}]}, source="x")


async def test_a_settled_probe_answers_alone():
    policy, prm = FakePolicy(answer_steps(["7"] * 40)), FakePRM(lambda step: 1.0)
    result = await run("auto", AutoConfig(effort="high", table=TABLE), policy, prm)
    assert [call["n"] for call in policy.calls] == [4] and result.stop_reason == "confident"
    auto = result.decisions["auto"]
    assert (auto["strategy"], auto["probe_samples"], auto["budget_tokens"], auto["table"]) == ("probe", 4, 5000, "test")


async def test_an_unsettled_probe_hands_over_and_stays_a_candidate():
    policy, prm = FakePolicy(answer_steps([str(i) for i in range(40)])), FakePRM(lambda step: 0.5)
    result = await run("auto", AutoConfig(effort="medium", table=TABLE, seed=100), policy, prm)
    auto = result.decisions["auto"]
    assert (auto["strategy"], auto["options"]) == ("particle_filtering", {"n": 4})
    assert policy.calls[0]["n"] == 4 and policy.calls[1]["stop"]  # the probe, then stepwise particles
    assert policy.calls[1]["seed"] == 104  # the particles do not reuse the probe's seeds
    assert len(result.candidates) == 4 + 4  # probe solutions and particles


async def test_a_voting_tier_continues_the_probe_instead_of_starting_over():
    policy, prm = FakePolicy(answer_steps(["1", "2", "3", "4"] + ["5"] * 30)), FakePRM(lambda step: 0.9)
    result = await run("auto", AutoConfig(effort="low", table=TABLE), policy, prm)
    assert [call["n"] for call in policy.calls][:2] == [4, 2]  # probe, then adaptive best_of_n's next wave
    assert result.tokens_generated == sum(c.tokens for c in result.candidates)


def test_without_a_table_the_default_is_the_reasoning_effort_presets():
    plan = parse_search({"strategy": "auto"})
    assert plan.config.table is None
    assert [t.strategy for t in DEFAULT_TABLE.tiers] == ["best_of_n", "beam_search", "beam_search"]
    assert parse_search({"strategy": "auto"}, auto_table=TABLE).config.table is TABLE
