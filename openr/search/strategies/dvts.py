"""Diverse verifier tree search (DVTS, Beeching et al., 2024).

The `n` samples per depth are split over `n // beam_width` independent
subtrees; each subtree greedily keeps its single best-scored child per step.
Beam search tends to collapse onto one high-scoring prefix; independent
subtrees keep the final candidates diverse, which pays off at large `n`.
"""

from __future__ import annotations

from dataclasses import dataclass

from openr.contracts import Policy, StepScorer
from openr.search.aggregation import AGGREGATIONS, rank_max
from openr.search.budget import Budget
from openr.search.candidates import BudgetReason, SearchProblem, SearchResult
from openr.search.config import GroupedSamplesConfig
from openr.search.metered import MeteredPolicy, MeteredScorer, conclude, require_prm


@dataclass(frozen=True)
class DvtsConfig(GroupedSamplesConfig):
    """`n` steps sampled per depth over all subtrees; `beam_width` children per subtree per depth."""

    @property
    def subtrees(self) -> int:
        return self.n // self.beam_width


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: DvtsConfig, budget: Budget
) -> SearchResult:
    """Grow every open subtree one step per depth, all in one policy call and
    one PRM call; the final answer is chosen among the subtrees' solutions by
    `config.aggregation`.

    Children are compared by the aggregation's step reduction over the whole
    path. A subtree whose children the PRM budget left unscored keeps its tip.
    """
    aggregation = AGGREGATIONS[config.aggregation]
    scorer = MeteredScorer(require_prm(prm, "dvts"), problem.question, aggregation, budget)
    sampler = MeteredPolicy(policy, config, budget, problem.step_separator)
    tips = [problem.empty()] * config.subtrees
    stop_reason: BudgetReason | None = None
    for _ in range(config.max_steps):
        growing = [i for i, tip in enumerate(tips) if not tip.ended]
        if not growing:
            break
        stop_reason = budget.exhausted()
        if stop_reason:
            break
        rows = await sampler.sample_steps([problem.prefix(tips[i].steps) for i in growing], config.beam_width)
        children = [tips[i].extend(step) for i, row in zip(growing, rows) for step in row]
        scored = await scorer.score(children)
        if not any(scored):  # none fits the PRM's context: every subtree keeps its tip
            break
        start = 0
        for i, row in zip(growing, rows):
            own_children = [child for child in scored[start : start + len(row)] if child is not None]
            start += len(row)
            if own_children:
                tips[i] = rank_max(own_children)[0]
        budget.record_progress([tip for tip in tips if tip.steps], aggregation)
    return conclude(problem, [tip for tip in tips if tip.steps], aggregation, budget, stop_reason)
