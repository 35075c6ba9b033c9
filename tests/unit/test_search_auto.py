"""strategy "auto": the decision on a fixed table, the table's JSON form, and
runs that answer from the probe or hand over to the chosen strategy."""

from __future__ import annotations

import pytest

from openr.contracts import Step
from openr.search import parse_search
from openr.search.auto import DEFAULT_TABLE, AutoConfig, AutoTable, AutoTier, decide, effort_preset
from tests.support.search_fakes import TOKENS_PER_STEP, FakePolicy, FakePRM, answer_steps, run

pytestmark = pytest.mark.anyio

TABLE = AutoTable(tiers=(AutoTier(0, "best_of_n", {"n": 8, "adaptive": True}),
                         AutoTier(1000, "particle_filtering", {"n": 8}),
                         AutoTier(4000, "beam_search", {"n": 16, "beam_width": 4})),
                  settled_confidence=0.9, effort_tokens={"low": 300, "medium": 1000, "high": 5000}, source="test")


@pytest.mark.parametrize(("tokens", "confidence", "has_prm", "strategy", "options"), [
    (5000, 0.95, True, None, {}),                                           # settled: the probe answers
    (500, 0.6, True, "best_of_n", {"n": 8, "adaptive": True}),              # below the second tier
    (10, 0.6, True, "best_of_n", {"n": 8, "adaptive": True}),               # below every tier: the first
    (1000, 0.89, True, "particle_filtering", {"n": 8}),                     # exactly the second tier
    (4000, 0.5, True, "beam_search", {"n": 16, "beam_width": 4}),
    (None, 0.5, True, "beam_search", {"n": 16, "beam_width": 4}),           # no budget: the top tier
    (4000, 0.5, False, "deepconf", {"n": 16}),                               # no PRM: deepconf at that size
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


def test_a_tier_names_a_search_never_auto_itself():
    looping = {"tiers": [{"min_tokens": 0, "strategy": "auto", "options": {}}]}
    with pytest.raises(ValueError, match="strategy must be one of .*'beam_search'"):
        AutoTable.from_json(looping, source="loop.json")


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_presets_are_the_default_tables_tiers(effort):
    tier = DEFAULT_TABLE.tier_for(DEFAULT_TABLE.effort_tokens[effort])
    assert effort_preset(effort, has_prm=True) == {"strategy": tier.strategy, **tier.options}
    assert effort_preset(effort, has_prm=False) == {"strategy": "deepconf", "n": tier.options["n"]}


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
    assert (auto["strategy"], auto["options"]) == ("particle_filtering", {"n": 8})
    assert policy.calls[0]["n"] == 4 and policy.calls[1]["stop"]  # the probe, then stepwise particles
    assert len(policy.calls[1]["prefixes"]) == 8 - 4  # the probe's 4 solutions are particles already
    assert policy.calls[1]["seed"] == 104  # the particles do not reuse the probe's seeds
    assert len(result.candidates) == 8  # the filter's population, the probe's solutions in it


async def test_a_voting_tier_continues_the_probe_instead_of_starting_over():
    # Scores of 0.8 stay below the table's 0.9: the probe's leader is not verified, and its votes disagree.
    policy, prm = FakePolicy(answer_steps(["1", "2", "3", "4"] + ["5"] * 30)), FakePRM(lambda step: 0.8)
    result = await run("auto", AutoConfig(effort="low", table=TABLE), policy, prm)
    assert [call["n"] for call in policy.calls][:2] == [4, 2]  # probe, then adaptive best_of_n's next wave
    assert result.tokens_generated == sum(c.tokens for c in result.candidates)


def one_solution_per_sample(path: tuple[str, ...], sample_id: int) -> Step:
    """Every sample, whole or stepwise, is a one-step solution with its own answer:
    solutions' worth = samples, and no probe settles."""
    return Step(f"so \\boxed{{{sample_id}}}", TOKENS_PER_STEP, "eos", 0.0)


def single_tier(strategy: str, options: dict) -> AutoTable:
    return AutoTable(tiers=(AutoTier(0, strategy, options),), settled_confidence=0.9, source="test")


@pytest.mark.parametrize(("strategy", "options", "size"), [
    ("particle_filtering", {"n": 8}, 8),
    ("particle_filtering", {"n": 4}, 4),  # the probe is the whole population: nothing left to grow
    ("beam_search", {"n": 16, "beam_width": 4}, 16),
    ("dvts", {"n": 8, "beam_width": 2}, 8),
    ("best_of_n", {"n": 8}, 8),  # the probe's aggregation: its waves continue
    ("best_of_n", {"n": 8, "aggregation": "prm_last_max"}, 8),  # another aggregation: runs after, smaller
])
async def test_a_tier_of_size_n_costs_about_n_solutions_with_the_probe_counted_in(strategy, options, size):
    policy, prm = FakePolicy(one_solution_per_sample), FakePRM(lambda step: 0.5)
    result = await run("auto", AutoConfig(table=single_tier(strategy, options), seed=100), policy, prm)
    assert result.decisions["auto"]["strategy"] == strategy
    assert policy.samples_drawn == size and result.tokens_generated == size * TOKENS_PER_STEP
    seeds = sorted((c["seed"], c["seed"] + len(c["prefixes"]) * c["n"]) for c in policy.calls)
    assert all(end <= start for (_, end), (start, _) in zip(seeds, seeds[1:]))  # no seed drawn twice


@pytest.mark.parametrize(("strategy", "options", "ran_options", "reused"), [
    ("particle_filtering", {"n": 8}, {"n": 8}, "as particles: its 4 solutions start"),
    ("beam_search", {"n": 16, "beam_width": 4}, {"n": 12, "beam_width": 4}, "beam_search ran n=12 of its 16"),
    ("beam_search", {"n": 6, "beam_width": 3}, {"n": 3, "beam_width": 3}, "at least 3, a multiple of beam_width 3"),
    ("best_of_n", {"n": 8}, {"n": 8}, "as samples: its 4 count toward best_of_n's n=8"),
    ("mcts", {"n_children": 2, "num_simulations": 2}, {"n_children": 2, "num_simulations": 2}, "ran in full"),
])
async def test_the_trace_says_how_the_probe_was_reused_and_what_size_ran(strategy, options, ran_options, reused):
    policy, prm = FakePolicy(one_solution_per_sample), FakePRM(lambda step: 0.5)
    result = await run("auto", AutoConfig(table=single_tier(strategy, options)), policy, prm)
    auto = result.decisions["auto"]
    assert (auto["options"], auto["ran_options"]) == (options, ran_options)
    assert reused in auto["probe_reused"]


def test_without_a_table_the_default_is_the_reasoning_effort_presets():
    plan = parse_search({"strategy": "auto"})
    assert plan.config.table is None
    assert [t.strategy for t in DEFAULT_TABLE.tiers] == ["best_of_n", "beam_search", "beam_search", "beam_search"]
    assert parse_search({"strategy": "auto"}, auto_table=TABLE).config.table is TABLE


@pytest.mark.parametrize(("strategy", "options"), [
    ("beam_search", {"n": 4, "beam_width": 4}),
    ("particle_filtering", {"n": 4}),
    ("best_of_n", {"n": 4, "aggregation": "prm_last_max"}),
])
async def test_a_tier_no_larger_than_the_probe_runs_alone_without_one(strategy, options):
    policy, prm = FakePolicy(one_solution_per_sample), FakePRM(lambda step: 0.5)
    result = await run("auto", AutoConfig(table=single_tier(strategy, options), seed=100), policy, prm)
    auto = result.decisions["auto"]
    assert (auto["strategy"], auto["probe_samples"], auto["ran_options"]) == (strategy, 0, options)
    assert "runs alone" in auto["why"]
    assert policy.samples_drawn == 4  # the tier's 4, not a probe's 4 plus more


async def test_a_voting_tier_no_larger_than_the_probe_is_the_probe():
    policy, prm = FakePolicy(one_solution_per_sample), FakePRM(lambda step: 0.5)
    result = await run("auto", AutoConfig(table=single_tier("best_of_n", {"n": 4})), policy, prm)
    assert result.decisions["auto"]["probe_samples"] == 4 and policy.samples_drawn == 4
