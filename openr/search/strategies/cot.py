"""Chain of thought: one solution, greedy by default, in a single policy call.

The baseline every other strategy is measured against; it needs no PRM.
"""

from __future__ import annotations

from dataclasses import dataclass

from openr.contracts import Policy, StepScorer
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import Candidate, SearchProblem, SearchResult
from openr.search.config import SearchConfig
from openr.search.metered import MeteredPolicy, conclude


@dataclass(frozen=True)
class CotConfig(SearchConfig):
    """One sample; temperature 0 makes it greedy."""

    temperature: float = 0.0


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: CotConfig, budget: Budget
) -> SearchResult:
    """Generate the whole solution in one call; `prm` is unused, as one solution
    leaves nothing to choose between."""
    stop_reason = budget.exhausted()
    candidates: list[Candidate] = []
    if stop_reason is None:
        sampler = MeteredPolicy(policy, config, budget, problem.step_separator)
        [[completion]] = await sampler.sample_solutions([problem.prompt], 1, config.max_solution_tokens)
        candidates.append(problem.empty().continue_with(completion))
    # With a single candidate any ranking picks it; majority_vote needs no scores.
    return conclude(problem, candidates, AGGREGATIONS["majority_vote"], budget, stop_reason)
