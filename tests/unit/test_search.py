"""Search strategies, aggregation and configuration against a fake policy and a
fake PRM (budgets are in test_search_budget.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from openr.contracts import Step
from openr.search import STRATEGIES, Budget, SearchConfigError, build_config
from openr.search.aggregation import (
    AGGREGATIONS,
    parse_aggregation,
    rank_majority,
    rank_max,
    rank_vote,
    reduce_last,
    reduce_mean,
    reduce_min,
    reduce_prod,
)
from openr.search.candidates import Candidate, SearchResult
from openr.search.config import SearchConfig
from openr.search.metered import MeteredPolicy, MeteredScorer
from openr.search.strategies.beam_search import BeamSearchConfig
from openr.search.strategies.best_of_n import BestOfNConfig
from openr.search.strategies.cot import CotConfig
from openr.search.strategies.dvts import DvtsConfig
from openr.search.strategies.majority_vote import MajorityVoteConfig
from openr.search.strategies.mcts import MctsConfig, Node, SearchTree, backup, select_path, sibling_priors
from openr.search.strategies.particle_filtering import ParticleFilteringConfig
from openr.tasks.problem import STEP_SEPARATOR
from tests.support.search_fakes import (
    PROBLEM,
    TOKENS_PER_STEP,
    FakePolicy,
    FakePRM,
    answer_steps,
    path_of,
    run,
    score_by_last_id,
    tree_step,
)

pytestmark = pytest.mark.anyio


# Aggregation


def test_step_reductions():
    scores = [0.9, 0.2, 0.5]
    assert reduce_last(scores) == 0.5
    assert reduce_min(scores) == 0.2
    assert math.isclose(reduce_prod(scores), 0.09)
    assert math.isclose(reduce_mean(scores), 1.6 / 3)


def test_openr_aggregation_names_parse():
    for name in ("majority_vote", "prm_last_max", "prm_last_vote", "prm_min_max", "prm_min_vote",
                 "prm_prod_max", "prm_mean_max", "prm_mean_vote", "prm_prod_vote"):
        assert name in AGGREGATIONS
    min_vote = parse_aggregation("prm_min_vote")
    assert (min_vote.reduce, min_vote.rank, min_vote.uses_prm) == (reduce_min, rank_vote, True)
    assert parse_aggregation("majority_vote").rank is rank_majority
    assert not parse_aggregation("majority_vote").uses_prm
    with pytest.raises(KeyError, match="prm_max_min"):
        parse_aggregation("prm_max_min")


def test_vote_weighs_answers_by_score_and_max_takes_the_single_best():
    lone = Candidate(steps=("\\boxed{1}",), aggregate_score=0.9, finished=True, answer="1")
    pair_best = Candidate(steps=("\\boxed{2}",), aggregate_score=0.6, finished=True, answer="2")
    pair_other = Candidate(steps=("\\boxed{ 2 }",), aggregate_score=0.5, finished=True, answer=" 2 ")
    pool = [lone, pair_other, pair_best]
    assert rank_max(pool)[0] is lone
    assert rank_vote(pool)[0] is pair_best  # 0.6 + 0.5 > 0.9; best of that answer
    assert rank_majority(pool)[0] is pair_best


def test_finished_solutions_rank_ahead_of_open_ones():
    open_high = Candidate(steps=("\\boxed{1}",), aggregate_score=0.99)
    finished_low = Candidate(steps=("\\boxed{2}",), aggregate_score=0.1, finished=True)
    assert AGGREGATIONS["prm_last_max"].rank_final([open_high, finished_low])[0] is finished_low


# Strategies


async def test_cot_is_one_greedy_whole_solution_call():
    policy = FakePolicy(answer_steps(["4"]))
    result = await run("cot", CotConfig(), policy, prm=None)
    [call] = policy.calls
    assert (call["temperature"], call["stop"], call["n"]) == (0.0, [], 1)
    assert call["max_tokens"] == CotConfig().max_steps * CotConfig().max_step_tokens
    assert result.answer_text == f"try 0{STEP_SEPARATOR}so \\boxed{{4}}"
    assert (result.finish_reason, result.tokens_generated) == ("stop", 2 * TOKENS_PER_STEP)


async def test_majority_vote_picks_the_most_common_answer():
    policy = FakePolicy(answer_steps(["3", "5", "7", "5", "3", "5"]))
    result = await run("majority_vote", MajorityVoteConfig(n=6), policy, prm=None)
    assert len(policy.calls) == 1
    assert result.candidates[0].answer == "5"
    assert [c.answer for c in result.top_answers(3)] == ["5", "3", "7"]
    assert result.prm_calls == 0


@pytest.mark.parametrize(("aggregation", "winner"), [("prm_min_max", "1"), ("prm_last_max", "2")])
async def test_best_of_n_picks_the_highest_aggregated_score(aggregation, winner):
    step_scores = {"try 0": 0.9, "so \\boxed{0}": 0.1, "try 1": 0.5, "so \\boxed{1}": 0.6,
                   "try 2": 0.2, "so \\boxed{2}": 0.8}
    policy, prm = FakePolicy(answer_steps(["0", "1", "2"])), FakePRM(step_scores.__getitem__)
    result = await run("best_of_n", BestOfNConfig(n=3, aggregation=aggregation), policy, prm)
    assert result.candidates[0].answer == winner
    assert len(policy.calls) == 1 and len(prm.calls) == 1 and len(prm.calls[0]) == 3
    assert result.prm_calls == 3 and result.finish_reason == "stop"


async def test_beam_search_keeps_beam_width_beams_with_one_call_of_each_kind_per_depth():
    config = BeamSearchConfig(n=6, beam_width=2, aggregation="prm_last_max")
    policy, prm = FakePolicy(tree_step(eos_depth=4)), FakePRM(score_by_last_id)
    result = await run("beam_search", config, policy, prm)
    assert len(policy.calls) == len(prm.calls) == 4
    assert [call["n"] for call in policy.calls] == [6, 3, 3, 3]
    assert all(len(call["prefixes"]) <= config.beam_width for call in policy.calls)
    # The beams kept after depth 1 are its two best children: samples 5 and 4.
    assert [path_of(p) for p in policy.calls[1]["prefixes"]] == [("r.5",), ("r.4",)]
    assert len(result.candidates) == config.beam_width
    assert all(c.finished and len(c.steps) == 4 for c in result.candidates)



@pytest.mark.parametrize("strategy, config", [
    ("beam_search", BeamSearchConfig(n=4, beam_width=2)), ("dvts", DvtsConfig(n=4, beam_width=2)),
    ("mcts", MctsConfig(num_simulations=3, n_children=2)), ("best_of_n", BestOfNConfig(n=3)),
    ("best_of_n", BestOfNConfig(n=6, adaptive=True)), ("particle_filtering", ParticleFilteringConfig(n=3)),
])
async def test_the_policys_own_step_separator_cuts_and_joins_steps(strategy, config):
    separator = "\n---\n"
    problem = replace(PROBLEM, step_separator=separator)
    policy, prm = FakePolicy(tree_step(eos_depth=3), separator=separator), FakePRM(score_by_last_id)
    result = await run(strategy, config, policy, prm, problem=problem)
    assert all(call["stop"] in ([separator], []) for call in policy.calls)
    assert any(call["stop"] == [separator] for call in policy.calls) == (strategy != "best_of_n")
    best = result.candidates[0]
    assert len(best.steps) == 3 and "\n" not in "".join(best.steps)
    assert result.answer_text == separator.join(best.steps)

async def test_dvts_subtrees_grow_independently():
    config = DvtsConfig(n=6, beam_width=2, aggregation="prm_last_max")
    policy, prm = FakePolicy(tree_step(eos_depth=3)), FakePRM(score_by_last_id)
    result = await run("dvts", config, policy, prm)
    assert len(policy.calls) == len(prm.calls) == 3
    assert all(len(call["prefixes"]) == 3 and call["n"] == 2 for call in policy.calls)
    # Each later subtree's children always outscore the earlier ones', yet every
    # subtree keeps its own best child: subtree i picks sample 2i+1 at depth 1.
    assert sorted(c.steps[0] for c in result.candidates) == ["r.1", "r.3", "r.5"]
    for candidate in result.candidates:
        lineage = zip(candidate.steps, candidate.steps[1:])
        assert all(child.startswith(parent + ".") for parent, child in lineage)


def test_backup_adds_a_visit_and_the_value_along_the_path():
    root = Node(Candidate())
    a, b = Node(Candidate(), prior=0.2), Node(Candidate(), prior=0.8)
    a_child = Node(Candidate())
    root.children, a.children = [a, b], [a_child]
    backup([root, a, a_child], 0.8)
    backup([root, b], 0.2)
    assert (root.visits, root.value_sum) == (2, 1.0)
    assert (a.visits, a.mean_value, a_child.visits, b.mean_value) == (1, 0.8, 1, 0.2)
    # No exploration: follow the best mean value. Strong exploration: b's larger prior wins.
    assert select_path(root, c_puct=0.0) == [root, a, a_child]
    assert select_path(root, c_puct=10.0) == [root, b]


async def test_mcts_simulation_expands_the_puct_choice_and_backs_up_its_children():
    config = MctsConfig(n_children=2, c_puct=0.0, aggregation="prm_last_max")
    policy, prm = FakePolicy(tree_step(eos_depth=10)), FakePRM(score_by_last_id)
    budget = Budget()
    aggregation = AGGREGATIONS[config.aggregation]
    tree = SearchTree(PROBLEM, MeteredPolicy(policy, config, budget),
                      MeteredScorer(prm, PROBLEM.question, aggregation, budget), aggregation, config)
    await tree.simulate()
    await tree.simulate()
    first, second = tree.root.children  # r.0 (0.00) and r.1 (0.01): greedy picks r.1 next
    assert [path_of(call["prefixes"][0]) for call in policy.calls] == [(), ("r.1",)]
    assert (first.visits, second.visits, tree.root.visits) == (1, 3, 4)
    assert math.isclose(second.value_sum, 0.01 + 0.02 + 0.03)
    assert math.isclose(tree.root.value_sum, 0.0 + 0.01 + 0.02 + 0.03)


async def test_mcts_stops_at_its_simulation_budget_and_finishes_its_most_visited_path():
    config = MctsConfig(n_children=2, num_simulations=5, max_steps=10)
    policy, prm = FakePolicy(tree_step(eos_depth=8)), FakePRM(score_by_last_id)
    result = await run("mcts", config, policy, prm)
    # 5 expansions, then no solution is finished: n_children rollouts of the most visited path in one call.
    assert len(policy.calls) == len(prm.calls) == 6
    assert [call["stop"] for call in policy.calls] == [[STEP_SEPARATOR]] * 5 + [[]]
    assert policy.calls[-1]["n"] == config.n_children and len(prm.calls[-1]) == config.n_children
    rolled_out = path_of(policy.calls[-1]["prefixes"][0])
    assert result.stop_reason is None and result.finish_reason == "stop"
    assert len(result.candidates) == config.n_children
    best = result.candidates[0]
    assert best.finished and len(best.steps) == 8 and best.steps[: len(rolled_out)] == rolled_out
    # The PRM picks among the rollouts: score_by_last_id favours the later sample.
    assert best.aggregate_score == max(c.aggregate_score for c in result.candidates)


async def test_mcts_without_a_finished_solution_returns_the_most_visited_path_when_a_budget_ends_it():
    config = MctsConfig(n_children=2, num_simulations=50, max_steps=10)
    policy, prm = FakePolicy(tree_step(eos_depth=8)), FakePRM(score_by_last_id)
    result = await run("mcts", config, policy, prm, Budget(max_prm_calls=3))
    assert len(prm.calls) == 2 and all(call["stop"] for call in policy.calls)  # two expansions, no rollout
    assert result.stop_reason == "prm_calls" and not result.candidates[0].finished
    assert result.finish_reason == "length"


async def test_mcts_returns_the_best_finished_solution():
    config = MctsConfig(n_children=3, num_simulations=20, aggregation="prm_last_max")
    policy, prm = FakePolicy(tree_step(eos_depth=2)), FakePRM(score_by_last_id)
    result = await run("mcts", config, policy, prm)
    assert result.candidates[0].finished and result.finish_reason == "stop"
    finished_scores = [c.aggregate_score for c in result.candidates if c.finished]
    assert result.candidates[0].aggregate_score == max(finished_scores)


async def test_mcts_rollouts_grade_new_nodes_by_the_completed_solution():
    config = MctsConfig(n_children=2, num_simulations=1, rollout=True, aggregation="prm_last_max")
    policy, prm = FakePolicy(tree_step(eos_depth=3)), FakePRM(score_by_last_id)
    result = await run("mcts", config, policy, prm)
    assert [call["stop"] for call in policy.calls] == [[STEP_SEPARATOR], []]
    assert len(prm.calls) == 1 and all(len(steps) == 3 for steps in prm.calls[0])
    assert all(c.finished and len(c.steps) == 3 for c in result.candidates)


async def test_seeded_search_gives_every_sample_its_own_seed():
    config = BeamSearchConfig(n=4, beam_width=2, seed=100)
    policy = FakePolicy(tree_step(eos_depth=3))
    await run("beam_search", config, policy, FakePRM(score_by_last_id))
    assert [call["seed"] for call in policy.calls] == [100, 104, 108]


# Configuration


@pytest.mark.parametrize(("make", "field"), [
    (lambda: BeamSearchConfig(beam_width=0), "beam_width"),
    (lambda: BeamSearchConfig(n=10, beam_width=4), "n"),
    (lambda: DvtsConfig(n=0), "n"),
    (lambda: BestOfNConfig(aggregation="prm_max_min"), "aggregation"),
    (lambda: SearchConfig(temperature=-0.1), "temperature"),
    (lambda: SearchConfig(top_p=0.0), "top_p"),
    (lambda: CotConfig(max_steps=True), "max_steps"),
    (lambda: MajorityVoteConfig(max_step_tokens=0), "max_step_tokens"),
    (lambda: MctsConfig(c_puct=-1.0), "c_puct"),
    (lambda: MctsConfig(rollout="yes"), "rollout"),
    (lambda: MctsConfig(num_simulations=0), "num_simulations"),
    (lambda: Budget(max_tokens_total=0), "max_tokens_total"),
    (lambda: Budget(max_seconds=0.0), "max_seconds"),
    (lambda: build_config("bogus", {}), "strategy"),
    (lambda: build_config("cot", {"n": 3}), "n"),
])
def test_config_errors_name_the_field(make, field):
    with pytest.raises(SearchConfigError) as error:
        make()
    assert error.value.field == field
    assert field in str(error.value)


def test_build_config_fills_defaults_and_keeps_options():
    config = build_config("beam_search", {"n": 8, "beam_width": 2})
    assert (config.n, config.beam_width, config.steps_per_beam) == (8, 2, 4)
    assert config.aggregation == "prm_min_max"


@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "mcts", "best_of_n"])
async def test_prm_strategies_refuse_to_run_without_a_prm(strategy):
    policy = FakePolicy(tree_step(eos_depth=2))
    with pytest.raises(SearchConfigError) as error:
        await run(strategy, STRATEGIES[strategy].config_type(), policy, prm=None)
    assert error.value.field == "strategy" and policy.calls == []


def test_mcts_priors_are_a_softmax_of_per_token_logprobs():
    short_sure, long_sure = Step("a", 1, "step", -0.1), Step("b", 10, "step", -1.0)
    unsure = Step("c", 1, "step", -2.0)
    priors = sibling_priors([short_sure, long_sure, unsure])
    assert math.isclose(sum(priors), 1.0) and math.isclose(priors[0], priors[1])
    assert priors[2] < priors[0]
    no_logprobs = [Step("x", 3, "step", 0.0), Step("y", 7, "step", 0.0)]
    assert sibling_priors(no_logprobs) == [0.5, 0.5]


def test_top_answers_lists_distinct_answers_best_first():
    def solution(answer: str, score: float) -> Candidate:
        return Candidate(steps=(f"\\boxed{{{answer}}}",), aggregate_score=score, finished=True, answer=answer)

    result = SearchResult((solution("1", 0.9), solution("1", 0.8), solution("2", 0.5)), 0, 0, None)
    assert [c.answer for c in result.top_answers(5)] == ["1", "2"]
    assert result.top_answers(1) == [result.candidates[0]] and result.top_answers(0) == []
