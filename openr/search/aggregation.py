"""How step scores become one score per candidate, and candidates become one answer.

An aggregation is a step reduction (`last`, `min`, `prod`, `mean`) paired with a
selection (`max`, `vote`) or plain `majority` voting, so OpenR's names
(`prm_min_max`, `prm_last_vote`, `majority_vote`, ...) are entries of one
registry rather than code paths. Without a PRM, `confidence_vote` and
`confidence_max` rank by the policy's own token confidence instead
(`openr.search.confidence`: a sample's lowest group confidence).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openr.search.candidates import Candidate, answer_key

StepReduction = Callable[[Sequence[float]], float]
Ranking = Callable[[Sequence[Candidate]], list[Candidate]]


def reduce_last(scores: Sequence[float]) -> float:
    return scores[-1]


def reduce_min(scores: Sequence[float]) -> float:
    return min(scores)


def reduce_prod(scores: Sequence[float]) -> float:
    return math.prod(scores)


def reduce_mean(scores: Sequence[float]) -> float:
    return sum(scores) / len(scores)


def rank_max(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best aggregated score first; ties keep sampling order."""
    return sorted(candidates, key=lambda c: -c.aggregate_score)


def _rank_answer_groups(
    candidates: Sequence[Candidate], weight: Callable[[Candidate], float]
) -> list[Candidate]:
    """Group by extracted answer, order groups by total weight, and list each
    group's candidates best score first. Candidates without an answer cannot
    win a vote, so they come last."""
    groups: dict[str, list[Candidate]] = {}
    unanswered: list[Candidate] = []
    for candidate in candidates:
        key = answer_key(candidate.answer)
        if key is None:
            unanswered.append(candidate)
        else:
            groups.setdefault(key, []).append(candidate)
    ordered = sorted(groups.values(), key=lambda group: -sum(weight(c) for c in group))
    return [c for group in ordered for c in rank_max(group)] + rank_max(unanswered)


def rank_vote(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Weighted vote: each candidate votes for its answer with its aggregated score."""
    return _rank_answer_groups(candidates, lambda c: c.aggregate_score)


def rank_majority(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Plain vote: every candidate counts once; the PRM plays no part."""
    return _rank_answer_groups(candidates, lambda c: 1.0)


@dataclass(frozen=True)
class Aggregation:
    """A named (reduction, selection) pair. `uses_prm` is False for plain voting,
    where strategies that only need the PRM for selection skip scoring."""

    name: str
    reduce: StepReduction
    rank: Ranking
    uses_prm: bool
    # The score bounds the PRM's probability that every step is right (last, min,
    # prod of calibrated step scores; a mean of them does not).
    score_is_probability: bool = False
    # The score is the sample's token confidence, read from its log-probabilities, not a PRM's.
    uses_confidence: bool = False

    def score(self, step_scores: Sequence[float]) -> float:
        """The candidate's aggregated score; 0 for a candidate the PRM never saw."""
        return self.reduce(step_scores) if step_scores else 0.0

    def rank_final(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Rank for the final answer: finished solutions always ahead of open or
        truncated ones, which only win when the budget ran out before any finished."""
        finished = [c for c in candidates if c.finished]
        unfinished = [c for c in candidates if not c.finished]
        return self.rank(finished) + self.rank(unfinished)


_REDUCTIONS: dict[str, StepReduction] = {
    "last": reduce_last,
    "min": reduce_min,
    "prod": reduce_prod,
    "mean": reduce_mean,
}
_PRM_SELECTIONS: dict[str, Ranking] = {"max": rank_max, "vote": rank_vote}

# The one registry of aggregation names. majority_vote keeps `last` so that,
# when PRM scores exist, they still order candidates within one answer.
AGGREGATIONS: dict[str, Aggregation] = {
    f"prm_{reduction}_{selection}": Aggregation(f"prm_{reduction}_{selection}", reduce, rank, uses_prm=True,
                                                score_is_probability=reduction != "mean")
    for reduction, reduce in _REDUCTIONS.items()
    for selection, rank in _PRM_SELECTIONS.items()
}
AGGREGATIONS["majority_vote"] = Aggregation("majority_vote", reduce_last, rank_majority, uses_prm=False)
AGGREGATIONS["confidence_vote"] = Aggregation("confidence_vote", reduce_last, rank_vote, uses_prm=False,
                                              uses_confidence=True)
AGGREGATIONS["confidence_max"] = Aggregation("confidence_max", reduce_last, rank_max, uses_prm=False,
                                             uses_confidence=True)


def parse_aggregation(name: str) -> Aggregation:
    """The aggregation an OpenR-style name stands for; KeyError lists the known names."""
    try:
        return AGGREGATIONS[name]
    except KeyError:
        raise KeyError(f"unknown aggregation {name!r}; known: {sorted(AGGREGATIONS)}") from None
