"""Particle filtering over reasoning steps (Puri et al., 2025).

`n` particles (partial solutions) each grow one step per round, all in one
policy call and one PRM call; then the population is resampled, with
replacement, in proportion to softmax(PRM step score / `resample_temperature`).
Beam search keeps only the top `beam_width` and so commits early to what the
PRM likes now; resampling keeps a weaker particle alive with a probability that
matches its weight, which tolerates a PRM that is noisy on single steps.

How it departs from the paper: a particle's weight is the PRM score of its
latest step only (the paper's partial-answer reward); finished particles stay in
the population and are resampled like the rest, but are not extended; and the
answer is chosen among the final particles by `aggregation` (duplicates that
resampling made count as votes under a `vote` aggregation).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from openr.contracts import Policy, StepScorer
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import BudgetReason, Candidate, SearchProblem, SearchResult
from openr.search.config import MAX_SAMPLES, PrmGuidedConfig, check_float, check_int
from openr.search.metered import MeteredPolicy, MeteredScorer, conclude, require_prm

DEFAULT_PARTICLES = 8
# Scores are in [0, 1]: at 0.2 a step scored 0.9 weighs e**4 (about 55) times one scored 0.1.
DEFAULT_RESAMPLE_TEMPERATURE = 0.2
MAX_RESAMPLE_TEMPERATURE = 10.0


@dataclass(frozen=True)
class ParticleFilteringConfig(PrmGuidedConfig):
    BUDGET_OPTION: ClassVar[str | None] = "n"

    n: int = DEFAULT_PARTICLES  # particles, each extended by one sampled step per round
    # Softmax temperature of the resampling weights over PRM step scores: lower is greedier.
    resample_temperature: float = DEFAULT_RESAMPLE_TEMPERATURE

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n", self.n, 1, MAX_SAMPLES)
        check_float("resample_temperature", self.resample_temperature, 0.0, MAX_RESAMPLE_TEMPERATURE,
                    low_open=True)

    @property
    def samples(self) -> int:
        return self.n


def resampling_weights(particles: Sequence[Candidate], temperature: float) -> list[float]:
    """softmax(latest step score / temperature) over the particles; a particle
    the PRM has not scored counts as scored 0."""
    logits = [(p.step_scores[-1] if p.step_scores else 0.0) / temperature for p in particles]
    top = max(logits)
    weights = [math.exp(logit - top) for logit in logits]
    total = sum(weights)
    return [weight / total for weight in weights]


def resample(particles: Sequence[Candidate], weights: Sequence[float], rng: random.Random) -> list[Candidate]:
    """As many particles as before, drawn with replacement in proportion to `weights`."""
    return rng.choices(list(particles), weights=weights, k=len(particles))


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: ParticleFilteringConfig,
    budget: Budget,
) -> SearchResult:
    """Up to `max_steps` rounds of extend, score, resample; stops early once every
    particle has ended. Resampling draws from a generator seeded by `config.seed`,
    so a seeded search is reproducible."""
    return await filter_from(problem, policy, prm, config, budget, ())


async def filter_from(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: ParticleFilteringConfig,
    budget: Budget, start: Sequence[Candidate],
) -> SearchResult:
    """`run`, with the population starting from `start` (PRM-scored particles
    sampled before the filter, e.g. auto's probe) and empty particles up to `n`.

    Whole solutions in `start` are ended, so they are never extended, only
    resampled like the filter's own finished particles: `start` takes the place
    of samples the filter would otherwise draw, which is how auto makes its
    probe count toward the filter's size instead of being paid on top of it.
    """
    aggregation = AGGREGATIONS[config.aggregation]
    scorer = MeteredScorer(require_prm(prm, "particle_filtering"), problem.question, aggregation, budget)
    sampler = MeteredPolicy(policy, config, budget, problem.step_separator)
    rng = random.Random(config.seed)
    particles = list(start) + [problem.empty()] * max(0, config.n - len(start))
    stop_reason: BudgetReason | None = None
    for _ in range(config.max_steps):
        growing = [i for i, particle in enumerate(particles) if not particle.ended]
        if not growing:
            break
        stop_reason = budget.exhausted()
        if stop_reason:
            break
        rows = await sampler.sample_steps([problem.prefix(particles[i].steps) for i in growing], 1)
        scored = await scorer.score([particles[i].extend(row[0]) for i, row in zip(growing, rows)])
        if not any(scored):  # none fits the PRM's context: keep the particles we have
            break
        for i, child in zip(growing, scored):
            if child is not None:  # unscored (PRM budget): the particle keeps its last step
                particles[i] = child
        particles = resample(particles, resampling_weights(particles, config.resample_temperature), rng)
        budget.record_progress([p for p in particles if p.steps], aggregation)
    return conclude(problem, [p for p in particles if p.steps], aggregation, budget, stop_reason)
