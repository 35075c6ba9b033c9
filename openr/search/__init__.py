"""Search over reasoning steps: strategies, aggregation, budgets, and the
`Policy` / `StepScorer` contracts they are written against. Pure Python: no
torch, vllm or fastapi here.

`STRATEGIES` is the one registry of strategies: name -> (config type, run).
Every `run` has the signature
`async run(problem, policy, prm, config, budget) -> SearchResult`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import fields
from typing import Any, NamedTuple

from openr.search import beam_search, best_of_n, cot, dvts, majority_vote, mcts
from openr.search.aggregation import AGGREGATIONS, Aggregation, parse_aggregation
from openr.search.budget import Budget
from openr.search.config import SearchConfig, SearchConfigError
from openr.search.protocols import Policy, Step, StepScorer
from openr.search.types import Candidate, SearchProblem, SearchResult

RunSearch = Callable[[SearchProblem, Policy, StepScorer | None, Any, Budget], Awaitable[SearchResult]]


class Strategy(NamedTuple):
    config_type: type[SearchConfig]
    run: RunSearch


STRATEGIES: dict[str, Strategy] = {
    "cot": Strategy(cot.CotConfig, cot.run),
    "majority_vote": Strategy(majority_vote.MajorityVoteConfig, majority_vote.run),
    "best_of_n": Strategy(best_of_n.BestOfNConfig, best_of_n.run),
    "beam_search": Strategy(beam_search.BeamSearchConfig, beam_search.run),
    "dvts": Strategy(dvts.DvtsConfig, dvts.run),
    "mcts": Strategy(mcts.MctsConfig, mcts.run),
}


def build_config(strategy: str, options: Mapping[str, Any]) -> SearchConfig:
    """The validated config of `strategy` from request options (defaults for the rest).

    Raises SearchConfigError naming `strategy`, an option the strategy does not
    take, or the first invalid value.
    """
    if strategy not in STRATEGIES:
        raise SearchConfigError("strategy", f"strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
    config_type = STRATEGIES[strategy].config_type
    known = {f.name for f in fields(config_type)}
    for name in options:
        if name not in known:
            raise SearchConfigError(name, f"{strategy} takes no option {name!r}; it takes {sorted(known)}")
    return config_type(**options)


__all__ = [
    "AGGREGATIONS",
    "Aggregation",
    "Budget",
    "Candidate",
    "Policy",
    "STRATEGIES",
    "SearchConfig",
    "SearchConfigError",
    "SearchProblem",
    "SearchResult",
    "Step",
    "StepScorer",
    "Strategy",
    "build_config",
    "parse_aggregation",
]
