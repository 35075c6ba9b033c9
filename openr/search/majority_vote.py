"""Majority vote (self-consistency): `n` sampled solutions, the most common final answer wins.

Needs no PRM, which makes it the fair baseline for what a PRM adds at equal
token spend.
"""

from __future__ import annotations

from dataclasses import dataclass

from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.config import MAX_SAMPLES, SearchConfig, check_int
from openr.search.metered import conclude, sample_whole_solutions
from openr.contracts import Policy, StepScorer
from openr.search.candidates import SearchProblem, SearchResult

DEFAULT_SAMPLES = 8


@dataclass(frozen=True)
class MajorityVoteConfig(SearchConfig):
    n: int = DEFAULT_SAMPLES  # solutions sampled

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n", self.n, 1, MAX_SAMPLES)

    @property
    def samples(self) -> int:
        return self.n


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: MajorityVoteConfig, budget: Budget
) -> SearchResult:
    """Sample all `n` solutions in one call and rank them by answer count; ties
    go to the answer sampled first. `prm` is unused."""
    candidates, stop_reason = await sample_whole_solutions(problem, policy, config, budget)
    return conclude(problem, candidates, AGGREGATIONS["majority_vote"], budget, stop_reason)
