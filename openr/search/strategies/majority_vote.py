"""Majority vote (self-consistency): `n` sampled solutions, the most common final answer wins.

Needs no PRM, which makes it the fair baseline for what a PRM adds at equal
token spend. With `adaptive` it samples in waves and stops once the leading
answer is settled (Adaptive-Consistency; see `adaptive`).
"""

from __future__ import annotations

from dataclasses import dataclass

from openr.contracts import Policy, StepScorer
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import SearchProblem, SearchResult
from openr.search.waves import SampledSolutionsConfig, sample_and_choose


@dataclass(frozen=True)
class MajorityVoteConfig(SampledSolutionsConfig):
    """`n` solutions (at most, with `adaptive`), voted on by final answer."""


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: MajorityVoteConfig, budget: Budget
) -> SearchResult:
    """Sample the solutions (in one call, or in waves with `adaptive`) and rank
    them by answer count; ties go to the answer sampled first. `prm` is unused."""
    return await sample_and_choose(problem, policy, config, budget, AGGREGATIONS["majority_vote"], None)
