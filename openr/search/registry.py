"""The one registry of strategies (name -> config type and `run`): the searches
of `openr.search.strategies` and `auto`, which chooses among them; and the
runner that enforces a budget's deadline on any of them.

Every `run` has the signature
`async run(problem, policy, prm, config, budget) -> SearchResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from openr.contracts import Policy, StepScorer
from openr.search import auto
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import SearchProblem, SearchResult
from openr.search.config import SearchConfig
from openr.search.metered import conclude
from openr.search.strategies import SEARCHES, Strategy, build_search

STRATEGIES: dict[str, Strategy] = {**SEARCHES, "auto": Strategy(auto.AutoConfig, auto.run)}


def build_config(strategy: object, options: Mapping[str, Any]) -> SearchConfig:
    """The validated config of `strategy` from its options (defaults for the rest).

    Raises SearchConfigError naming `strategy`, an option the strategy does not
    take, or the first invalid value.
    """
    return build_search(strategy, options, STRATEGIES)


def takes_option(strategy: str, option: str) -> bool:
    """Whether a request may give `strategy` the option `option` (e.g. which strategies take an aggregation)."""
    return option in STRATEGIES[strategy].options()


def budget_option(strategy: str) -> str | None:
    """The option that sizes `strategy`'s budget (`n`, `num_simulations`, `effort`), None for a fixed size (cot)."""
    return STRATEGIES[strategy].config_type.BUDGET_OPTION


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
