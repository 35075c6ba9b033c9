"""Search over reasoning steps: strategies, aggregation, budgets, the parsing of
a request's `search` options, and (re-exported from `openr.contracts`) the
`Policy` / `StepScorer` contracts they are written against. Pure Python: no
torch, vllm, fastapi or math-verify here.

`STRATEGIES` (in `registry`) is the one registry of strategies: the searches of
`strategies/` (one module each) and `auto`, which chooses among them. Ask it
what a strategy takes (`takes_option`, `budget_option`) rather than keeping
lists of names. `parse_search` (in `options`) is the one parser of their options;
`waves`, `budget`, `metered` and `aggregation` are the machinery they share.
"""

from __future__ import annotations

from openr.contracts import Policy, ScorerInputTooLong, Step, StepScorer
from openr.search.aggregation import AGGREGATIONS, Aggregation, parse_aggregation
from openr.search.auto import EFFORTS, effort_preset
from openr.search.budget import Budget
from openr.search.candidates import Candidate, SearchProblem, SearchResult
from openr.search.config import DEFAULT_BEAM_WIDTH, SearchConfig, SearchConfigError
from openr.search.options import SearchPlan, parse_search
from openr.search.registry import STRATEGIES, budget_option, build_config, run_strategy, takes_option
from openr.search.strategies import Strategy

__all__ = [
    "AGGREGATIONS",
    "Aggregation",
    "Budget",
    "DEFAULT_BEAM_WIDTH",
    "EFFORTS",
    "Candidate",
    "Policy",
    "STRATEGIES",
    "ScorerInputTooLong",
    "SearchConfig",
    "SearchConfigError",
    "SearchPlan",
    "SearchProblem",
    "SearchResult",
    "Step",
    "StepScorer",
    "Strategy",
    "budget_option",
    "build_config",
    "effort_preset",
    "parse_aggregation",
    "parse_search",
    "run_strategy",
    "takes_option",
]
