"""A model's search defaults (openr.search.defaults): which tier a request gets,
what it fills in, and what it must leave to the request or the built-in defaults."""

from __future__ import annotations

import pytest

from openr.search import DEFAULT_BEAM_WIDTH
from openr.search.config import DEFAULT_TEMPERATURE
from openr.search.defaults import SearchDefaults
from openr.search.options import parse_search

LARGE_N = {"strategies": {
    "beam_search": [{"min_n": 64, "options": {"beam_width": 16, "temperature": 1.1}},
                    {"min_n": 8, "options": {"temperature": 0.9}}],
    "best_of_n": [{"min_n": 1, "options": {"temperature": 0.7}}]}}


@pytest.fixture
def defaults() -> SearchDefaults:
    return SearchDefaults.from_json(LARGE_N, source="test.json")


@pytest.mark.parametrize("search, filled", [
    ({"strategy": "beam_search", "n": 256}, {"beam_width": 16, "temperature": 1.1}),  # the largest tier <= n
    ({"strategy": "beam_search", "n": 64}, {"beam_width": 16, "temperature": 1.1}),
    ({"strategy": "beam_search", "n": 32}, {"temperature": 0.9}),  # tiers sort by min_n, not file order
    ({"strategy": "beam_search", "n": 4}, {}),  # below every tier
    ({"strategy": "beam_search", "n": 72}, {"temperature": 1.1}),  # 72 is no multiple of 16: width left out
    ({"strategy": "beam_search", "n": 64, "beam_width": 8}, {"temperature": 1.1}),  # the request's option wins
    ({"strategy": "beam_search", "n": 64, "temperature": 0.5}, {"beam_width": 16}),
])
def test_a_request_gets_its_tiers_options_that_it_leaves_unset_and_can_take(defaults, search, filled):
    plan = parse_search(search, defaults=defaults)
    assert plan.defaults == filled
    expected = {"beam_width": DEFAULT_BEAM_WIDTH, "temperature": DEFAULT_TEMPERATURE, **search, **filled}
    assert (plan.config.beam_width, plan.config.temperature) == (expected["beam_width"], expected["temperature"])


def test_the_strategys_default_n_picks_the_tier_and_unlisted_strategies_are_untouched(defaults):
    assert parse_search({"strategy": "best_of_n"}, defaults=defaults).config.temperature == 0.7
    assert parse_search({"strategy": "majority_vote", "n": 64}, defaults=defaults).config.temperature == \
        DEFAULT_TEMPERATURE
    assert parse_search({"strategy": "beam_search", "n": 64}).defaults == {}  # no file: built-in defaults


@pytest.mark.parametrize("data, why", [
    ({"strategies": {"mcts": [{"min_n": 1, "options": {}}]}}, "not sized by n"),
    ({"strategies": {"beam_search": [{"min_n": 6, "options": {"beam_width": 4}}]}}, "multiple of beam_width"),
    ({"strategies": {"best_of_n": [{"min_n": 4, "options": {"temperature": -1}}]}}, "temperature"),
    ({"strategies": {"best_of_n": [{"min_n": 4, "options": {"beam_width": 2}}]}}, "beam_width"),
    ({"strategies": {"best_of_n": [{"options": {}}]}}, "min_n"),
    ({"tiers": []}, "strategies"),
])
def test_a_file_the_strategies_would_refuse_is_refused_whole(data, why):
    with pytest.raises(ValueError, match=why) as err:
        SearchDefaults.from_json(data, source="bad.json")
    assert str(err.value).startswith("bad.json: not a search defaults file")
