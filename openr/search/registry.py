"""The one registry of strategies (name -> config type and `run`) and the runner
that enforces a budget's deadline on any of them.

Every `run` has the signature
`async run(problem, policy, prm, config, budget) -> SearchResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from openr.contracts import Policy, StepScorer
from openr.search import auto
from openr.search.strategies import beam_search, best_of_n, cot, dvts, majority_vote, mcts, particle_filtering
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import SearchProblem, SearchResult
from openr.search.config import SearchConfig
from openr.search.metered import conclude

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
    "particle_filtering": Strategy(particle_filtering.ParticleFilteringConfig, particle_filtering.run),
    "auto": Strategy(auto.AutoConfig, auto.run),
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
        return conclude(problem, candidates, aggregation, budget, "time")
