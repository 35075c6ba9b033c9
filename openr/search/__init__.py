"""Search over reasoning steps: strategies, aggregation, budgets, the parsing of
a request's `search` options, and (re-exported from `openr.contracts`) the
`Policy` / `StepScorer` contracts they are written against. Pure Python: no
torch, vllm, fastapi or math-verify here.

`STRATEGIES` (in `registry`) is the one registry of strategies; `parse_search`
(in `options`) is the one parser of their options.
"""

from __future__ import annotations

from openr.contracts import Policy, ScorerInputTooLong, Step, StepScorer
from openr.search.aggregation import AGGREGATIONS, Aggregation, parse_aggregation
from openr.search.budget import Budget
from openr.search.candidates import Candidate, SearchProblem, SearchResult
from openr.search.config import SearchConfig, SearchConfigError
from openr.search.options import SearchPlan, build_config, parse_search, takes_option
from openr.search.registry import STRATEGIES, Strategy, run_strategy

__all__ = [
    "AGGREGATIONS",
    "Aggregation",
    "Budget",
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
    "build_config",
    "parse_aggregation",
    "parse_search",
    "run_strategy",
    "takes_option",
]
