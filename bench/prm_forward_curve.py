"""PRM tokens per second against rows per forward pass: where batching a PRM
can pay and where it saturates. It is the premise of search_bench's figure 2
(micro-batching only pays where a larger pass costs less per token) and that
script's figure 2b; bench/gpu_check.sh records the whole curve, 1 to 256 rows.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_FORWARD_SIZES = (1, 4, 16, 64)  # rows per forward pass compared by default
MIN_CANDIDATES = 128  # candidates scored at every size (more when the largest size is larger)

Pair = tuple[str, Sequence[str]]  # (question, steps): one candidate as the PRM scores it


@dataclass(frozen=True)
class CurvePoint:
    """One size of the curve: tokens/s (median over rounds) and the rows its
    forward passes actually held (the PRM cuts a pass early where padding
    would add too much work, so a size is a ceiling)."""

    size: int
    tokens_per_s: float
    rows_per_forward: float


def curve_candidates(logged: Sequence[Pair], sizes: Sequence[int]) -> list[Pair]:
    """The candidates every size scores: the logged ones in order, repeated
    where fewer were logged than max(MIN_CANDIDATES, the largest size), so the
    largest size still fills a pass (a PRM without a prefix cache scores a
    repeat as it scored the original)."""
    if not logged:
        raise ValueError("no logged candidates to score")
    return list(itertools.islice(itertools.cycle(logged), max(MIN_CANDIDATES, *sizes)))


def forward_curve(prm, pairs: Sequence[Pair], sizes: Sequence[int], rounds: int) -> list[CurvePoint]:
    """Score `pairs` with `prm` (no prefix cache: every row runs whole) in passes
    of each of `sizes` rows, sizes alternating within each round. One untimed
    pass first, so that no size pays for the device's warm-up."""
    tokens = sum(len(prm.encode(question, steps).ids) for question, steps in pairs)
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    forwards = dict.fromkeys(sizes, 0)
    counting: list[int] = []
    hook = prm.model.register_forward_hook(lambda *_: counting.append(1))
    kept = prm.forward_batch_size
    try:
        prm.score_batch(pairs[:1])
        for _ in range(rounds):
            for size in sizes:
                prm.forward_batch_size = size
                counting.clear()
                start = time.perf_counter()
                prm.score_batch(pairs)  # returns Python floats: the device has finished
                seconds[size].append(time.perf_counter() - start)
                forwards[size] += len(counting)
    finally:
        prm.forward_batch_size = kept
        hook.remove()
    return [CurvePoint(size, tokens / statistics.median(seconds[size]), len(pairs) * rounds / forwards[size])
            for size in sizes]
