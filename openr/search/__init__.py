"""Search over reasoning steps: strategies, aggregation, budgets, and the
`Policy` / `StepScorer` contracts they are written against. Pure Python: no
torch, vllm or fastapi here.

`STRATEGIES` is the one registry of strategies: name -> (config type, run).
Every `run` has the signature
`async run(problem, policy, prm, config, budget) -> SearchResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import fields
from typing import Any, NamedTuple

from openr.search import beam_search, best_of_n, cot, dvts, majority_vote, mcts
from openr.search.aggregation import AGGREGATIONS, Aggregation, parse_aggregation
from openr.search.budget import Budget
from openr.search.config import SearchConfig, SearchConfigError
from openr.search.metered import conclude
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


async def run_strategy(strategy: str, problem: SearchProblem, policy: Policy, prm: StepScorer | None,
                       config: SearchConfig, budget: Budget) -> SearchResult:
    """Run `strategy` under `budget`, whose time limit also interrupts a round in
    flight: at the deadline the round is cancelled (engine requests and PRM calls
    with it) and the answer comes from the last finished round (`stop_reason`
    "time"). Strategies themselves only check the clock between rounds."""
    run = STRATEGIES[strategy].run(problem, policy, prm, config, budget)
    seconds = budget.seconds_left()
    if seconds is None:
        return await run
    try:
        return await asyncio.wait_for(run, timeout=max(seconds, 0.0))
    except TimeoutError:
        candidates, aggregation = budget.progress or ([], AGGREGATIONS["majority_vote"])
        return conclude(candidates, aggregation, budget, "time")


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
    "run_strategy",
]
