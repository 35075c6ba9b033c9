"""Best-of-N: `n` sampled solutions, each scored step by step by the PRM, one chosen
by the aggregation (highest min-step score by default, or a PRM-weighted vote).
With `adaptive` it samples in waves and stops once the PRM-weighted vote for the
leading answer is settled (see `adaptive`)."""

from __future__ import annotations

from dataclasses import dataclass

from openr.contracts import Policy, StepScorer
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import SearchProblem, SearchResult
from openr.search.config import DEFAULT_AGGREGATION, check_aggregation
from openr.search.metered import MeteredScorer, require_prm
from openr.search.waves import SampledSolutionsConfig, sample_and_choose


@dataclass(frozen=True)
class BestOfNConfig(SampledSolutionsConfig):
    aggregation: str = DEFAULT_AGGREGATION

    def __post_init__(self) -> None:
        super().__post_init__()
        check_aggregation(self.aggregation)

    @property
    def needs_prm(self) -> bool:
        """Only to score: `majority_vote` picks among the samples without it."""
        return AGGREGATIONS[self.aggregation].uses_prm


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: BestOfNConfig, budget: Budget
) -> SearchResult:
    """One policy call for all `n` solutions and one PRM call to score them (one
    of each per wave, with `adaptive`).

    With `majority_vote` the PRM is not called (nor required). Solutions the
    PRM budget leaves unscored are dropped, as they cannot be ranked.
    """
    aggregation = AGGREGATIONS[config.aggregation]
    scorer = None
    if config.needs_prm:
        scorer = MeteredScorer(require_prm(prm, "best_of_n"), problem.question, aggregation, budget)
    return await sample_and_choose(problem, policy, config, budget, aggregation, scorer)
