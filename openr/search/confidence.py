"""How confident a policy was while it wrote a sample, from its tokens' log-probabilities:
the measures DeepConf filters and weights samples by (Fu et al. 2025, "Deep
Think with Confidence"), for models that have no PRM.

Token confidence is the negative mean of the top-k log-probabilities at a
position: high where the policy put its mass on few tokens, low where it
hesitated. A sample's measures (higher is more confident, each):
- `lowest_group`: the lowest mean token confidence over a sliding window of
  `window` tokens (a sample shorter than the window is one group);
- `tail`: the mean token confidence of the last `tail` tokens;
- `mean`: the mean token confidence of the whole sample;
- `min_logprob`: the lowest log-probability of a sampled token.
How this departs from the paper: where an engine gives no top-k (a remote
server that sends sampled tokens' log-probabilities only), a position's top-k
is its sampled token alone, so its confidence is minus that log-probability;
and `min_logprob` is added, since on openr-arith it told a problem's right
samples from its wrong ones better than any group measure (issue 30's probe:
AUROC 0.75 against 0.62).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_TOP_LOGPROBS = 5  # k: alternatives per position that token confidence averages
DEFAULT_WINDOW = 2048  # tokens per group, the paper's (a sample shorter than this is one group)
DEFAULT_TAIL = 32  # tokens at the end that `tail` averages
# Below a threshold means below it by more than this (relative) margin: a sample
# identical to the warm-up sample that set the threshold must not fall below it
# by rounding (float32 logits of the same tokens differ in their last bits from
# one batch to another, and a running sum from a fresh one).
ROUNDING = 1e-5


def below(value: float, threshold: float) -> bool:
    """Whether `value` is below `threshold` by more than rounding."""
    return value < threshold - ROUNDING * max(1.0, abs(threshold))


def token_confidence(logprob: float, top: Sequence[float]) -> float:
    """Minus the mean of the top-k log-probabilities (of the sampled token's alone without them)."""
    return -sum(top) / len(top) if top else -logprob


def token_confidences(token_logprobs: Sequence[float], top_logprobs: Sequence[Sequence[float]]) -> list[float]:
    """Each token's confidence: from its top-k where the sample has them, else from
    its own log-probability. A sample's end-of-text token has a log-probability but
    no top-k (engines leave it out of their tokens), and is left out here too: a
    confidence from one log-probability is not on the scale of one from k."""
    if top_logprobs:
        return [token_confidence(lp, top) for lp, top in zip(token_logprobs, top_logprobs)]
    return [-lp for lp in token_logprobs]


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """Mean confidence of every run of `window` consecutive tokens (one group, the
    whole sample, when it is shorter; none for an empty sample)."""
    if not confidences:
        return []
    if len(confidences) <= window:
        return [sum(confidences) / len(confidences)]
    total = sum(confidences[:window])
    groups = [total / window]
    for i in range(window, len(confidences)):
        total += confidences[i] - confidences[i - window]
        groups.append(total / window)
    return groups


def lowest_group(confidences: Sequence[float], window: int = DEFAULT_WINDOW) -> float:
    groups = group_confidences(confidences, window)
    return min(groups) if groups else 0.0


def tail_confidence(confidences: Sequence[float], tail: int = DEFAULT_TAIL) -> float:
    last = confidences[-tail:]
    return sum(last) / len(last) if last else 0.0


def mean_confidence(confidences: Sequence[float]) -> float:
    return sum(confidences) / len(confidences) if confidences else 0.0


def min_logprob(token_logprobs: Sequence[float]) -> float:
    return min(token_logprobs, default=0.0)


@dataclass(frozen=True)
class SampleTokens:
    """What the measures read of one sample: its tokens' log-probabilities and top-k."""

    token_logprobs: Sequence[float]
    top_logprobs: Sequence[Sequence[float]]

    def confidences(self) -> list[float]:
        return token_confidences(self.token_logprobs, self.top_logprobs)


@dataclass(frozen=True)
class Measure:
    """A named measure of one sample (`value`), the positive weight its value
    votes with (`weight`), and whether it only falls as tokens come (`running`):
    those can stop a sample online, the moment they fall below a threshold."""

    name: str
    value: Callable[[SampleTokens, int, int], float]  # (sample, window, tail) -> value
    weight: Callable[[float], float]
    running: bool


MEASURES: dict[str, Measure] = {
    "lowest_group": Measure("lowest_group", lambda s, window, tail: lowest_group(s.confidences(), window),
                            lambda v: max(v, 0.0), running=True),
    "tail": Measure("tail", lambda s, window, tail: tail_confidence(s.confidences(), tail),
                    lambda v: max(v, 0.0), running=False),
    "mean": Measure("mean", lambda s, window, tail: mean_confidence(s.confidences()),
                    lambda v: max(v, 0.0), running=False),
    # A log-probability votes with its probability: the least likely token's.
    "min_logprob": Measure("min_logprob", lambda s, window, tail: min_logprob(s.token_logprobs),
                           math.exp, running=True),
}


def percentile(values: Sequence[float], percent: float) -> float:
    """The `percent`-th percentile of `values`, interpolated linearly between ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class RunningMonitor:
    """A `TokenMonitor` that halts a sample once its running measure falls below
    `threshold`: for `lowest_group`, once a full window of tokens averages a
    lower confidence (shorter stretches never halt it: a few hesitant tokens at
    the start are no verdict); for `min_logprob`, at the first token less likely."""

    def __init__(self, measure: str, threshold: float, window: int = DEFAULT_WINDOW):
        if not MEASURES[measure].running:
            raise ValueError(f"{measure} cannot stop a sample online")
        self.measure, self.threshold, self.window = measure, threshold, window
        self._recent: deque[float] = deque(maxlen=window)
        self._total = 0.0
        self.tokens = 0
        self.halted_at: int | None = None  # tokens generated when it said halt

    def __call__(self, logprob: float, top: Sequence[float]) -> bool:
        self.tokens += 1
        if self.halted_at is not None:
            return True
        if self.measure == "min_logprob":
            low = below(logprob, self.threshold)
        else:
            if len(self._recent) == self.window:
                self._total -= self._recent[0]
            confidence = token_confidence(logprob, top)
            self._recent.append(confidence)
            self._total += confidence
            low = len(self._recent) == self.window and below(self._total / self.window, self.threshold)
        if low:
            self.halted_at = self.tokens
        return low


def confidence_score(step, measure: str = "lowest_group", window: int = DEFAULT_WINDOW,
                     tail: int = DEFAULT_TAIL) -> float:
    """A sampled solution's (`Step`'s) vote weight under `measure`: what the
    confidence aggregations score candidates by."""
    chosen = MEASURES[measure]
    return chosen.weight(chosen.value(SampleTokens(step.token_logprobs, step.top_logprobs), window, tail))
