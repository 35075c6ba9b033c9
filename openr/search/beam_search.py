"""Step-level beam search guided by the PRM.

Each depth expands every live beam into `n // beam_width` candidate next steps
in one batched policy call, scores them all in one PRM call and keeps the best
`beam_width`. It spends its samples on the most promising partial solutions, so
it beats best-of-N on hard problems at equal budget (Snell et al., 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from openr.search.aggregation import AGGREGATIONS, rank_max
from openr.search.budget import Budget
from openr.search.config import GroupedSamplesConfig
from openr.search.metered import MeteredPolicy, MeteredScorer, conclude, require_prm
from openr.contracts import Policy, StepScorer
from openr.search.candidates import BudgetReason, Candidate, SearchProblem, SearchResult


def distinct_paths(candidates: Sequence[Candidate]) -> list[Candidate]:
    """`candidates` in order, without any whose steps repeat an earlier one's
    (steps compared without surrounding whitespace)."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for candidate in candidates:
        key = tuple(step.strip() for step in candidate.steps)
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept


def samples_per_live_beam(config: BeamSearchConfig, live: int, ended: int) -> int:
    """The depth's samples, `steps_per_beam` for each beam slot not taken by an
    ended solution, spread over the `live` beams: when identical children
    collapsed into fewer beams, each distinct beam gets the samples of those
    that collapsed into it, so deduplication diversifies rather than spends less."""
    return max(1, (config.beam_width - ended) * config.steps_per_beam // live)


@dataclass(frozen=True)
class BeamSearchConfig(GroupedSamplesConfig):
    """`n` candidate steps sampled per depth, split over the beams; `beam_width` beams kept per depth."""

    @property
    def steps_per_beam(self) -> int:
        return self.n // self.beam_width


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: BeamSearchConfig, budget: Budget
) -> SearchResult:
    """Beam search over steps; the final answer is chosen by `config.aggregation`.

    How it departs from textbook beam search (and follows OpenR's):
    - beams are pruned by the aggregation's step reduction over the whole path
      (e.g. min step score), whatever its final selection is;
    - a beam that ends (eos, or cut by the step token cap) keeps its slot for
      good, so the search stops once `beam_width` solutions have ended; ended
      children that do not make the cut are dropped;
    - the first depth samples all `n` steps from the prompt alone;
    - children with the same steps (up to surrounding whitespace) collapse into
      one before the best are kept, so identical samples never fill several
      beams and the beams stay diverse; the fewer distinct beams then share
      the depth's samples (`samples_per_live_beam`).
    """
    aggregation = AGGREGATIONS[config.aggregation]
    scorer = MeteredScorer(require_prm(prm, "beam_search"), problem.question, aggregation, budget)
    sampler = MeteredPolicy(policy, config, budget, problem.step_separator)
    live = [problem.empty()]
    ended: list[Candidate] = []
    stop_reason: BudgetReason | None = None
    for depth in range(config.max_steps):
        if not live:
            break
        stop_reason = budget.exhausted()
        if stop_reason:
            break
        samples_per_beam = config.n if depth == 0 else samples_per_live_beam(config, len(live), len(ended))
        rows = await sampler.sample_steps([problem.prefix(beam.steps) for beam in live], samples_per_beam)
        children = [beam.extend(step) for beam, row in zip(live, rows) for step in row]
        scored = [child for child in await scorer.score(children) if child is not None]
        if children and not scored:  # none fits the PRM's context: keep the beams we have
            break
        kept = distinct_paths(rank_max(scored))[: config.beam_width - len(ended)]
        ended += [child for child in kept if child.ended]
        live = [child for child in kept if not child.ended]
        budget.record_progress(ended + live, aggregation)
    return conclude(problem, ended + [beam for beam in live if beam.steps], aggregation, budget, stop_reason)
