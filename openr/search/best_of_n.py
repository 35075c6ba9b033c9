"""Best-of-N: `n` sampled solutions, each scored step by step by the PRM, one chosen
by the aggregation (highest min-step score by default, or a PRM-weighted vote)."""

from __future__ import annotations

from dataclasses import dataclass

from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.config import DEFAULT_AGGREGATION, MAX_SAMPLES, SearchConfig, check_aggregation, check_int
from openr.search.metered import MeteredScorer, conclude, require_prm, sample_whole_solutions
from openr.contracts import Policy, StepScorer
from openr.search.candidates import SearchProblem, SearchResult

DEFAULT_SAMPLES = 8


@dataclass(frozen=True)
class BestOfNConfig(SearchConfig):
    n: int = DEFAULT_SAMPLES  # solutions sampled
    aggregation: str = DEFAULT_AGGREGATION

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n", self.n, 1, MAX_SAMPLES)
        check_aggregation(self.aggregation)

    @property
    def needs_prm(self) -> bool:
        """Only to score: `majority_vote` picks among the samples without it."""
        return AGGREGATIONS[self.aggregation].uses_prm

    @property
    def samples(self) -> int:
        return self.n


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: BestOfNConfig, budget: Budget
) -> SearchResult:
    """One policy call for all `n` solutions, one PRM call to score them all.

    With `majority_vote` the PRM is not called (nor required). Solutions the
    PRM budget leaves unscored are dropped, as they cannot be ranked.
    """
    aggregation = AGGREGATIONS[config.aggregation]
    scorer = None
    if config.needs_prm:
        scorer = MeteredScorer(require_prm(prm, "best_of_n"), problem.question, aggregation, budget)
    candidates, stop_reason = await sample_whole_solutions(problem, policy, config, budget)
    budget.record_progress(candidates, aggregation)  # unscored, all rank alike: the first sampled
    if scorer is not None:
        candidates = [c for c in await scorer.score(candidates) if c is not None]
    return conclude(problem, candidates, aggregation, budget, stop_reason)
