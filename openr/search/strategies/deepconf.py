"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"): whole solutions voted
on with the policy's own token confidence as weights, for models with no PRM.

- offline: `n` samples at once; the top `keep_percent` of them by `measure`
  vote, each with its confidence as weight.
- online (the default): `warmup` samples first; the (100 - keep_percent)-th
  percentile of their measure is the threshold. Later samples come in waves of
  `wave`, each watched in the engine as it is generated and halted the moment
  its running measure falls below the threshold (its slot freed, its tokens
  still charged); no new wave starts once the weighted vote's consensus (the
  leading answer's share of the votes' weight) reaches `consensus`. Every
  warm-up sample votes, as in the paper (so a warm-up whose most confident
  sample alone clears the threshold is no consensus of one); a later one votes
  when it ended on its own (eos) and clears the threshold.

How it departs from the paper: samples after the warm-up come in waves, not one
by one, so a search is one batched engine call per wave and reproducible by
seed; a sample shorter than one window is a single group and is never halted
(it can still fall below the threshold, and then does not vote); `min_logprob`
is a measure too (`openr.search.confidence`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from openr.contracts import Policy, Step, StepScorer
from openr.search.aggregation import AGGREGATIONS
from openr.search.budget import Budget
from openr.search.candidates import Candidate, SearchProblem, SearchResult, StopReason, answer_key
from openr.search.confidence import (
    DEFAULT_TAIL,
    DEFAULT_TOP_LOGPROBS,
    DEFAULT_WINDOW,
    MEASURES,
    RunningMonitor,
    SampleTokens,
    below,
    percentile,
)
from openr.search.config import MAX_SAMPLES, MAX_STEP_TOKENS, SearchConfig, SearchConfigError, check_float, check_int
from openr.search.metered import MeteredPolicy, conclude

MODES = ("online", "offline")
MAX_TOP_LOGPROBS = 20  # OpenAI's (and vLLM's default) limit on alternatives per position
DEFAULT_SAMPLES = 16
DEFAULT_MEASURE = "lowest_group"
DEFAULT_KEEP_PERCENT = 90.0
DEFAULT_WARMUP = 4
DEFAULT_CONSENSUS = 0.95
DEFAULT_WAVE = 2
VOTE = AGGREGATIONS["confidence_vote"]  # a candidate's aggregate_score is its vote's weight (0: it does not vote)


@dataclass(frozen=True)
class DeepConfConfig(SearchConfig):
    """Up to `n` whole solutions, filtered and weighted by token confidence."""

    BUDGET_OPTION: ClassVar[str | None] = "n"

    n: int = DEFAULT_SAMPLES  # samples at most (online: the warm-up's included)
    mode: str = "online"  # "online": warm-up, early halting and consensus; "offline": all n, then filter
    measure: str = DEFAULT_MEASURE  # lowest_group, tail, mean or min_logprob (online: lowest_group or min_logprob)
    keep_percent: float = DEFAULT_KEEP_PERCENT  # eta: the share of samples, by measure, that vote
    window: int = DEFAULT_WINDOW  # tokens per group of lowest_group
    tail: int = DEFAULT_TAIL  # tokens that tail averages
    top_logprobs: int = DEFAULT_TOP_LOGPROBS  # k: alternatives per position that token confidence averages
    warmup: int = DEFAULT_WARMUP  # online: samples that set the threshold (at most n)
    consensus: float = DEFAULT_CONSENSUS  # online: tau, the leading answer's share of the weight that stops it
    wave: int = DEFAULT_WAVE  # online: samples per engine call after the warm-up

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n", self.n, 1, MAX_SAMPLES)
        if self.mode not in MODES:
            raise SearchConfigError("mode", f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if not isinstance(self.measure, str) or self.measure not in MEASURES:
            raise SearchConfigError("measure", f"measure must be one of {sorted(MEASURES)}, got {self.measure!r}")
        if self.mode == "online" and not MEASURES[self.measure].running:
            online = sorted(name for name, m in MEASURES.items() if m.running)
            raise SearchConfigError("measure", f"measure {self.measure} can only rise again as tokens come, so it "
                                    f"cannot halt a sample online: use {online}, or mode offline")
        check_float("keep_percent", self.keep_percent, 0.0, 100.0, low_open=True)
        check_int("window", self.window, 1, MAX_STEP_TOKENS)
        check_int("tail", self.tail, 1, MAX_STEP_TOKENS)
        check_int("top_logprobs", self.top_logprobs, 1, MAX_TOP_LOGPROBS)
        check_int("warmup", self.warmup, 1, MAX_SAMPLES)
        check_float("consensus", self.consensus, 0.0, 1.0, low_open=True)
        check_int("wave", self.wave, 1, MAX_SAMPLES)

    @property
    def samples(self) -> int:
        return self.n


@dataclass(frozen=True)
class Sample:
    """One sample as the trace shows it: its measure, whether it votes, and why it ended."""

    candidate: Candidate
    value: float
    votes: bool
    ended: str  # eos, length, halted (online, below the threshold), below_threshold, filtered (offline)

    def to_json(self) -> dict:
        return {"confidence": round(self.value, 6), "tokens": self.candidate.tokens, "votes": self.votes,
                "ended": self.ended, "answer": self.candidate.answer}


class DeepConf:
    """One DeepConf search's samples, drawn through the metered policy."""

    def __init__(self, problem: SearchProblem, policy: Policy, config: DeepConfConfig, budget: Budget):
        self.problem, self.config, self.budget = problem, config, budget
        self.samples: list[Sample] = []
        self.threshold: float | None = None
        self._policy = MeteredPolicy(policy, config, budget, problem.step_separator)

    async def draw(self, size: int, halt_below: float | None = None) -> list[tuple[Candidate, float, str]]:
        """`size` samples in one engine call (each halted below `halt_below`):
        (candidate, measure, how it ended) each."""
        monitor = None
        if halt_below is not None:
            monitor = functools.partial(RunningMonitor, self.config.measure, halt_below, self.config.window)
        [steps] = await self._policy.sample_solutions([self.problem.prompt], size, self.config.max_solution_tokens,
                                                      top_logprobs=self.config.top_logprobs, monitor=monitor)
        return self.read(steps)

    def read(self, steps: Sequence[Step]) -> list[tuple[Candidate, float, str]]:
        return [(self.problem.empty().continue_with(step).with_answer(self.problem.extract_answer),
                 self.value(step), _ended(step)) for step in steps]

    def value(self, step: Step) -> float:
        measure = MEASURES[self.config.measure]
        return measure.value(SampleTokens(step.token_logprobs, step.top_logprobs), self.config.window,
                             self.config.tail)

    def add(self, candidate: Candidate, value: float, ended: str, votes: bool) -> None:
        weight = MEASURES[self.config.measure].weight(value) if votes else 0.0
        self.samples.append(Sample(candidate.scored([], weight), value, votes, ended))
        self.budget.record_progress(self.candidates, VOTE)
        self.budget.note = self.progress()

    @property
    def candidates(self) -> list[Candidate]:
        return [s.candidate for s in self.samples]

    def consensus(self) -> float:
        """The leading answer's share of the voting weight (0 before any vote)."""
        weights: dict[str, float] = {}
        for sample in self.samples:
            key = answer_key(sample.candidate.answer)
            if sample.votes and sample.candidate.finished and key is not None:
                weights[key] = weights.get(key, 0.0) + sample.candidate.aggregate_score
        total = sum(weights.values())
        return max(weights.values()) / total if total > 0 else 0.0

    async def offline(self) -> StopReason | None:
        stop_reason = self.budget.exhausted()
        if stop_reason is not None:
            return stop_reason
        drawn = await self.draw(self.config.n)
        kept = math.ceil(len(drawn) * self.config.keep_percent / 100)
        order = sorted(range(len(drawn)), key=lambda i: -drawn[i][1])  # ties: the first sampled ranks first
        voters = set(order[:kept])
        for i, (candidate, value, ended) in enumerate(drawn):
            self.add(candidate, value, ended if i in voters else "filtered", i in voters)
        return None

    async def online(self, drawn: Sequence[Step] = ()) -> StopReason | None:
        """The online search; samples already `drawn` (with log-probabilities) start its warm-up."""
        stop_reason = self.budget.exhausted()
        more = min(self.config.warmup, self.config.n) - len(drawn)
        if stop_reason is not None and (more > 0 or not drawn):
            return stop_reason
        warmup = self.read(drawn) + (await self.draw(more) if more > 0 else [])
        self.threshold = percentile([value for _, value, _ in warmup], 100.0 - self.config.keep_percent)
        for candidate, value, ended in warmup:
            self.add(candidate, value, ended, votes=True)
        while len(self.samples) < self.config.n:
            if self.consensus() >= self.config.consensus:
                return "confident"
            stop_reason = self.budget.exhausted()
            if stop_reason is not None:
                return stop_reason
            for candidate, value, ended in await self.draw(min(self.config.wave, self.config.n - len(self.samples)),
                                                           self.threshold):
                self.vote_if_above(candidate, value, ended)
        return None

    def vote_if_above(self, candidate: Candidate, value: float, ended: str) -> None:
        above = not below(value, self.threshold)
        self.add(candidate, value, ended if above or ended == "halted" else "below_threshold",
                 above and ended != "halted")

    def decisions(self) -> dict:
        report = {"mode": self.config.mode, "measure": self.config.measure, "samples": len(self.samples),
                  "halted": sum(s.ended == "halted" for s in self.samples),
                  "voting": sum(s.votes for s in self.samples), "consensus": round(self.consensus(), 4),
                  "per_sample": [s.to_json() for s in self.samples]}
        if self.threshold is not None:
            report["threshold"] = round(self.threshold, 4)
        return {"deepconf": report}

    def progress(self) -> str:
        halted = sum(s.ended == "halted" for s in self.samples)
        return f"{len(self.samples)} samples ({halted} halted), consensus {self.consensus():.2f}"


def _ended(step: Step) -> str:
    return {"eos": "eos", "halted": "halted"}.get(step.finish_reason, "length")


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: DeepConfConfig, budget: Budget
) -> SearchResult:
    """Sample, filter and vote as `config.mode` says; `prm` is unused."""
    search = DeepConf(problem, policy, config, budget)
    stop_reason = await (search.online() if config.mode == "online" else search.offline())
    return conclude(problem, search.candidates, VOTE, budget, stop_reason, search.decisions())


async def run_after(problem: SearchProblem, policy: Policy, config: DeepConfConfig, budget: Budget,
                    drawn: Sequence[Step]) -> SearchResult:
    """Online DeepConf whose warm-up is samples already drawn with their log-probabilities
    (auto's probe): they set the threshold, vote, and count toward `n`. Their seeds
    came first, so the caller moves `config.seed` past them."""
    search = DeepConf(problem, policy, config, budget)
    stop_reason = await search.online(drawn)
    return conclude(problem, search.candidates, VOTE, budget, stop_reason, search.decisions())
