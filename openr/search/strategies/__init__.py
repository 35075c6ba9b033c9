"""The searches: one module each, a frozen config and
`async run(problem, policy, prm, config, budget) -> SearchResult`, listed in
`SEARCHES`. Adding a search means its module and its line here.

`openr.search.auto` chooses among these per question, so it sits a level up;
`openr.search.registry` lists the searches and auto together as STRATEGIES.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import fields
from typing import Any, NamedTuple

from openr.search.config import SearchConfig, SearchConfigError
from openr.search.strategies import (
    beam_search,
    best_of_n,
    cot,
    deepconf,
    dvts,
    majority_vote,
    mcts,
    particle_filtering,
)

RunSearch = Callable[..., Awaitable[Any]]  # (problem, policy, prm, config, budget) -> SearchResult


class Strategy(NamedTuple):
    """A strategy's config type and its `run`."""

    config_type: type[SearchConfig]
    run: RunSearch

    def options(self) -> set[str]:
        """The config fields a request may set (not those the server sets, like auto's table)."""
        return {f.name for f in fields(self.config_type) if f.metadata.get("request", True)}

    def build(self, name: str, options: Mapping[str, Any]) -> SearchConfig:
        """The validated config from a request's options (defaults for the rest).

        Raises SearchConfigError naming an option `name` does not take, or the first invalid value.
        """
        known = self.options()
        for option in options:
            if option not in known:
                raise SearchConfigError(option, f"{name} takes no option {option!r}; it takes {sorted(known)}")
        return self.config_type(**options)


SEARCHES: dict[str, Strategy] = {
    "cot": Strategy(cot.CotConfig, cot.run),
    "majority_vote": Strategy(majority_vote.MajorityVoteConfig, majority_vote.run),
    "best_of_n": Strategy(best_of_n.BestOfNConfig, best_of_n.run),
    "deepconf": Strategy(deepconf.DeepConfConfig, deepconf.run),
    "beam_search": Strategy(beam_search.BeamSearchConfig, beam_search.run),
    "dvts": Strategy(dvts.DvtsConfig, dvts.run),
    "mcts": Strategy(mcts.MctsConfig, mcts.run),
    "particle_filtering": Strategy(particle_filtering.ParticleFilteringConfig, particle_filtering.run),
}


def build_search(strategy: object, options: Mapping[str, Any],
                 strategies: Mapping[str, Strategy] = SEARCHES) -> SearchConfig:
    """The validated config of `strategy`, one of `strategies`, from its options.

    Raises SearchConfigError naming `strategy`, an option it does not take, or the first invalid value.
    """
    if not isinstance(strategy, str) or strategy not in strategies:
        raise SearchConfigError("strategy", f"strategy must be one of {sorted(strategies)}, got {strategy!r}")
    return strategies[strategy].build(strategy, options)
