"""`openr.search.parse_search`: the one parser of a request's `search` options."""

from __future__ import annotations

import pytest

from openr.search import STRATEGIES, SearchConfigError, parse_search

# Whether each strategy needs a PRM, with its default aggregation and with majority_vote.
NEEDS_PRM = {
    "cot": (False, False), "majority_vote": (False, False), "best_of_n": (True, False),
    "beam_search": (True, True), "dvts": (True, True), "mcts": (True, True), "particle_filtering": (True, True),
    "auto": (False, False), "deepconf": (False, False),
}


def test_parse_gives_a_typed_config_and_budget():
    plan = parse_search({"strategy": "beam_search", "n": 8, "beam_width": 2, "max_tokens_total": 500,
                         "timeout_s": 3, "return_trace": True})
    assert (plan.strategy, plan.config.n, plan.config.beam_width, plan.config.samples) == ("beam_search", 8, 2, 8)
    assert (plan.budget.max_tokens_total, plan.budget.max_seconds, plan.return_trace) == (500, 3, True)
    mcts = parse_search({"strategy": "mcts", "n_children": 3, "num_simulations": 5})
    assert mcts.config.samples == 15


def test_defaults_fill_what_the_request_leaves_out():
    plan = parse_search({}, default_strategy="majority_vote", default_max_tokens_total=40, default_timeout_s=2.5)
    assert (plan.strategy, plan.config.samples, plan.budget.max_tokens_total, plan.budget.max_seconds) == (
        "majority_vote", 8, 40, 2.5)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_needs_prm_is_decided_by_the_config(strategy):
    default = parse_search({"strategy": strategy}).config.needs_prm
    options = {"strategy": strategy}
    if "aggregation" in STRATEGIES[strategy].config_type.__dataclass_fields__:
        options["aggregation"] = "majority_vote"
    assert (default, parse_search(options).config.needs_prm) == NEEDS_PRM[strategy]


@pytest.mark.parametrize("options, field", [
    ({"strategy": "cot", "timeout_s": 0}, "timeout_s"),  # Budget's name for it is max_seconds
    ({"strategy": "cot", "max_tokens_total": True}, "max_tokens_total"),
    ({"strategy": "cot", "max_prm_calls": 0}, "max_prm_calls"),
    ({"strategy": "cot", "return_trace": 1}, "return_trace"),
    ({"strategy": ["cot"]}, "strategy"),
    ({}, "strategy"),
    ({"strategy": "best_of_n", "aggregation": ["prm_min_max"]}, "aggregation"),
])
def test_each_bad_option_is_named_as_the_request_spells_it(options, field):
    with pytest.raises(SearchConfigError) as err:
        parse_search(options)
    assert err.value.field == field and field in str(err.value)
