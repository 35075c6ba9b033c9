"""Sampling whole solutions in waves, with adaptive stopping: majority_vote and
best_of_n stop as soon as their leading answer is settled, instead of always
spending all `n` samples.

The stopping rule is Adaptive-Consistency's Beta criterion (Aggarwal et al.,
2023): with v1 and v2 the votes of the two leading answers, the leader's share
p of those votes has the posterior Beta(v1 + 1, v2 + 1) (uniform prior), and
sampling stops once P(p > 1/2) >= `confidence`. How it departs from the paper:
- samples come in waves (FIRST_WAVE_SAMPLES, then WAVE_SAMPLES at a time), not
  one by one: each wave is one batched policy call and one PRM call;
- with a PRM aggregation the votes are PRM-weighted: a solution votes for its
  answer with its aggregated score (v1, v2 are then real numbers, and the Beta
  tail is the regularized incomplete beta function), and the leader is the
  answer the aggregation ranks first. A PRM that doubts every solution thus
  keeps the search sampling, and one that trusts the leader settles it sooner;
- with a PRM aggregation whose score reads as a probability (the `last`, `min`
  and `prod` reductions of calibrated step scores, not `mean`), the PRM can
  also settle the answer by itself: each finished solution giving the leading
  answer is taken as independent evidence that it is right with probability
  its score, so the answer is verified to 1 - prod(1 - score) over them, and
  counts only while no other answer has a solution the PRM believes (score
  above 1/2). The confidence is the higher of the two readings. Why: a
  verifier can know an answer before votes agree. On openr-arith a sample is
  right about a third of the time, so votes seldom agree (the vote rule alone
  saved 12% of best-of-16's tokens), while the PRM scores a sound solution
  about 0.85 (its ceiling, the sigmoid of its fitted bias: its labels call
  some right steps wrong) and a wrong one below 0.4; two agreeing sound
  solutions give 0.98 (on docs/eval's 200 problems: 0.82x best-of-16's
  tokens at its accuracy, where the vote rule alone gave 0.89x). The
  independence is an assumption (one policy's samples of one question are
  not independent), which is why a single solution never settles it at the
  default 0.95.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from openr.contracts import Policy, Step
from openr.search.aggregation import Aggregation
from openr.search.budget import Budget
from openr.search.candidates import Candidate, SearchProblem, SearchResult, StopReason, answer_key
from openr.search.confidence import DEFAULT_TOP_LOGPROBS, confidence_score
from openr.search.config import MAX_SAMPLES, SearchConfig, SearchConfigError, check_float, check_int
from openr.search.metered import MeteredPolicy, MeteredScorer, conclude

DEFAULT_SAMPLES = 8
DEFAULT_CONFIDENCE = 0.95
# Four unanimous votes give P = 1 - 0.5**5 = 0.97, the fewest that can pass the
# default confidence; later waves are smaller so a settled answer stops soon.
FIRST_WAVE_SAMPLES = 4
WAVE_SAMPLES = 2


@dataclass(frozen=True)
class SampledSolutionsConfig(SearchConfig):
    """Settings of the strategies that sample whole solutions and pick among them."""

    BUDGET_OPTION: ClassVar[str | None] = "n"

    n: int = DEFAULT_SAMPLES  # solutions sampled (with `adaptive`, at most)
    adaptive: bool = False  # sample in waves and stop once the leading answer is settled
    confidence: float = DEFAULT_CONFIDENCE  # posterior P(leader stays ahead) that settles it

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n", self.n, 1, MAX_SAMPLES)
        if not isinstance(self.adaptive, bool):
            raise SearchConfigError("adaptive", f"adaptive must be true or false, got {self.adaptive!r}")
        check_float("confidence", self.confidence, 0.5, 1.0, low_open=True)

    @property
    def samples(self) -> int:
        return self.n


def leader_stays_ahead(leader_votes: float, runner_up_votes: float) -> float:
    """P(p > 1/2) for p ~ Beta(leader_votes + 1, runner_up_votes + 1): the
    posterior probability that the leading answer is the more likely of the two."""
    # Imported here: scipy costs start-up time to everything that imports openr.search.
    from scipy.special import betaincc

    return float(betaincc(leader_votes + 1.0, runner_up_votes + 1.0, 0.5))


def leader_confidence(candidates: Sequence[Candidate], aggregation: Aggregation) -> float:
    """How settled the answer of `candidates` (answers read) is under `aggregation`:
    `leader_stays_ahead` over the (PRM-weighted, for PRM aggregations) votes of
    the answer ranked first and of the strongest other answer, or where the
    aggregated score is a probability, `verified_by_prm`, whichever is higher.
    0 with no answer."""
    leader = next((answer_key(c.answer) for c in aggregation.rank_final(candidates) if c.answer is not None), None)
    if leader is None:
        return 0.0
    votes: dict[str, float] = {}
    for candidate in candidates:
        key = answer_key(candidate.answer)
        if key is not None:
            votes[key] = votes.get(key, 0.0) + (candidate.aggregate_score if aggregation.uses_prm else 1.0)
    runner_up = max((v for key, v in votes.items() if key != leader), default=0.0)
    verified = verified_by_prm(candidates, leader) if aggregation.score_is_probability else 0.0
    return max(leader_stays_ahead(votes[leader], runner_up), verified)


def verified_by_prm(candidates: Sequence[Candidate], leader: str) -> float:
    """1 - prod(1 - score) over the finished solutions answering `leader`, or 0
    while a solution with another answer scores above 1/2 (see the module docstring)."""
    doubt = 1.0
    for candidate in candidates:
        if not candidate.finished or candidate.answer is None:
            continue
        if answer_key(candidate.answer) == leader:
            doubt *= 1.0 - min(max(candidate.aggregate_score, 0.0), 1.0)
        elif candidate.aggregate_score > 0.5:
            return 0.0
    return 1.0 - doubt


class WaveSampler:
    """Whole solutions sampled in waves for one problem, each wave scored (with a
    scorer) and its answers read; one sampler, so seeds never repeat across waves."""

    def __init__(self, problem: SearchProblem, policy: Policy, config: SearchConfig, budget: Budget,
                 aggregation: Aggregation, scorer: MeteredScorer | None):
        self.candidates: list[Candidate] = []
        self.steps: list[Step] = []  # every sample as the policy gave it (with log-probabilities, if asked)
        self.drawn = 0  # samples asked for (unscorable ones are dropped from `candidates`)
        self.waves = 0
        self._problem = problem
        self._sampler = MeteredPolicy(policy, config, budget, problem.step_separator)
        self._max_tokens = config.max_solution_tokens
        self._budget = budget
        self._aggregation = aggregation
        self._scorer = scorer

    async def wave(self, size: int) -> None:
        """`size` more solutions in one policy call (and one PRM call); under a
        confidence aggregation each is scored by its token confidence instead."""
        top = DEFAULT_TOP_LOGPROBS if self._aggregation.uses_confidence else 0
        [completions] = await self._sampler.sample_solutions([self._problem.prompt], size, self._max_tokens,
                                                             top_logprobs=top)
        self.steps += completions
        new = [self._problem.empty().continue_with(c).with_answer(self._problem.extract_answer) for c in completions]
        if top:
            new = [c.scored([], confidence_score(step)) for c, step in zip(new, completions)]
        self.drawn += size
        self.waves += 1
        # Unscored, all rank alike: if time runs out while scoring, the answer is the first sampled.
        self._budget.record_progress(self.candidates + new, self._aggregation)
        if self._scorer is not None:
            new = [c for c in await self._scorer.score(new) if c is not None]
        self.candidates += new
        self._budget.record_progress(self.candidates, self._aggregation)

    def confidence(self) -> float:
        return leader_confidence(self.candidates, self._aggregation)

    async def run(self, n: int, adaptive: bool, confidence: float) -> StopReason | None:
        """Sample up to `n` solutions in all: all at once, or (`adaptive`) in waves
        until the answer's confidence reaches `confidence` ("confident") or a
        budget runs out (its reason)."""
        while self.drawn < n:
            stop_reason = self._budget.exhausted()
            if stop_reason is not None:
                return stop_reason
            first = FIRST_WAVE_SAMPLES if self.waves == 0 else WAVE_SAMPLES
            await self.wave(min(first if adaptive else n, n - self.drawn))
            if adaptive and self.drawn < n and self.confidence() >= confidence:
                return "confident"
        return None

    def decisions(self) -> dict:
        return {"adaptive": {"samples": self.drawn, "waves": self.waves, "confidence": round(self.confidence(), 4)}}


async def sample_and_choose(problem: SearchProblem, policy: Policy, config: SampledSolutionsConfig, budget: Budget,
                            aggregation: Aggregation, scorer: MeteredScorer | None) -> SearchResult:
    """majority_vote's and best_of_n's search: sample (all at once, or in waves with
    `config.adaptive`), score with `scorer` if any, and rank by `aggregation`."""
    sampler = WaveSampler(problem, policy, config, budget, aggregation, scorer)
    stop_reason = await sampler.run(config.n, config.adaptive, config.confidence)
    return conclude(problem, sampler.candidates, aggregation, budget, stop_reason,
                    sampler.decisions() if config.adaptive else None)
