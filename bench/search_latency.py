"""Figure 5 of search_bench.py: beam search's latency over best-of-N's at equal
generated tokens, with many searches in flight (issue 17's goal: at most 1.5x).

Per round, each strategy in turn (the order alternating between rounds) runs
one search per problem, `in_flight` at a time (a new one starts as one ends,
as under a steady load), on the same engine and a PRM behind one
`MicroBatchingScorer`, as concurrent requests share them in the server; every
search's latency is kept. There are twice as many problems as searches in
flight: in a single burst, the engine's first-come order alone would put
best-of-N's median search halfway through the burst and beam search's, which
queues again at every depth, near its end. Both run as the server runs them when asked for n
(and beam search's width) alone: to the end of each solution, within the
default step limits, where both generate about the same tokens (the figure
prints each side's mean; the other figures' shallow searches would not). A beam search calls the
policy once per depth and the PRM between calls, where a best-of-N calls each
once, so under load it queues for the engine once per depth.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from openr.prm.batcher import MicroBatchingScorer
from openr.search import STRATEGIES, Budget, build_config

SIDES = ("beam_search", "best_of_n")


async def in_flight_latencies(engine, prm, problems, bench_config, rounds: int, in_flight: int) -> dict[str, dict]:
    """Per side: every search's latency (s) and tokens over `rounds` rounds of
    one search per problem, `in_flight` at a time; n, width and seed are
    `bench_config`'s, the step limits the strategies' defaults."""
    options = {"n": bench_config.n, "seed": bench_config.seed}
    configs = {"beam_search": build_config("beam_search", {**options, "beam_width": bench_config.beam_width}),
               "best_of_n": build_config("best_of_n", options)}
    scorer = MicroBatchingScorer(prm)
    found = {side: {"latency_s": [], "tokens": []} for side in SIDES}
    slots = asyncio.Semaphore(in_flight)

    async def one(side: str, problem) -> None:
        async with slots:
            start = time.perf_counter()
            result = await STRATEGIES[side].run(problem, engine, scorer, configs[side], Budget())
            found[side]["latency_s"].append(time.perf_counter() - start)
            found[side]["tokens"].append(result.tokens_generated)

    try:
        for round_ in range(rounds):
            for side in SIDES[round_ % 2:] + SIDES[:round_ % 2]:
                prm.cache.clear()  # each side starts on an empty PRM prefix cache
                await asyncio.gather(*(one(side, problem) for problem in problems))
    finally:
        await scorer.close()
    return found


def latency_ratio(found: dict[str, dict]) -> tuple[float, str]:
    """(beam search p50 / best-of-N p50, the figure's detail)."""
    p50 = {side: statistics.median(found[side]["latency_s"]) for side in SIDES}
    tokens = {side: statistics.mean(found[side]["tokens"]) for side in SIDES}
    searches = len(found["beam_search"]["latency_s"])
    return p50["beam_search"] / p50["best_of_n"], (
        f"p50 {p50['beam_search']:.2f} vs {p50['best_of_n']:.2f} s; tokens per search "
        f"{tokens['beam_search']:.0f} vs {tokens['best_of_n']:.0f}; {searches} searches per side")
