"""Figure 5 of search_bench.py: beam search's latency over best-of-N's at equal
generated tokens, with many searches in flight (issue 17's goal: at most 1.5x).

Per round, each strategy in turn (the order alternating between rounds) runs
one search per problem, all at once, on the same engine and a PRM behind one
`MicroBatchingScorer`, as concurrent requests share them in the server; every
search's latency is kept. best-of-N runs with beam search's n and token cap
per solution (max_steps x max_step_tokens), so that both generate about the
same tokens: the figure prints each side's mean. A beam search calls the
policy once per depth and the PRM between calls, where a best-of-N calls each
once, so under load it queues for the engine once per depth.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict

from openr.prm.batcher import MicroBatchingScorer
from openr.search import STRATEGIES, Budget, build_config

SIDES = ("beam_search", "best_of_n")


async def in_flight_latencies(engine, prm, problems, beam_config, rounds: int) -> dict[str, dict]:
    """Per side: every search's latency (s) and tokens over `rounds` rounds of
    one search per problem, all in flight at once."""
    options = {key: value for key, value in asdict(beam_config).items()
               if key in ("n", "max_steps", "max_step_tokens", "seed")}
    configs = {"beam_search": beam_config, "best_of_n": build_config("best_of_n", options)}
    scorer = MicroBatchingScorer(prm)
    found = {side: {"latency_s": [], "tokens": []} for side in SIDES}

    async def one(side: str, problem) -> None:
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
