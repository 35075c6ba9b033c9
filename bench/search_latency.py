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

Per side it also records what a large n costs besides time: the process's
resident memory at its peak while the searches run and once they have ended
(this process holds what a server would: the engine, the PRM and its prefix
cache), the policy's tokens per second of search wall time, and the PRM
tokens forwarded next to those queried (what a PRM without a prefix cache
would forward).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from pathlib import Path

from openr.prm.batcher import MicroBatchingScorer
from openr.search import STRATEGIES, Budget, build_config

SIDES = ("beam_search", "best_of_n")
RSS_SAMPLE_S = 0.2  # how often the memory watcher reads the resident set size


def rss_mib() -> float:
    """This process's resident set size now, in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakRss:
    """The largest resident set size seen while the block runs, read every RSS_SAMPLE_S."""

    def __enter__(self) -> PeakRss:
        self.peak_mib, self._done = rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(RSS_SAMPLE_S):
            self.peak_mib = max(self.peak_mib, rss_mib())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_mib())


async def in_flight_latencies(engine, prm, problems, bench_config, rounds: int, in_flight: int) -> dict[str, dict]:
    """Per side: every search's latency (s) and tokens over `rounds` rounds of
    one search per problem, `in_flight` at a time; n, width and seed are
    `bench_config`'s, the step limits the strategies' defaults. Also per side:
    peak and after-run RSS (MiB), wall seconds, PRM tokens queried and forwarded."""
    options = {"n": bench_config.n, "seed": bench_config.seed}
    configs = {"beam_search": build_config("beam_search", {**options, "beam_width": bench_config.beam_width}),
               "best_of_n": build_config("best_of_n", options)}
    scorer = MicroBatchingScorer(prm)
    found = {side: {"latency_s": [], "tokens": [], "wall_s": 0.0, "peak_rss_mib": 0.0, "after_rss_mib": 0.0,
                    "prm_queried_tokens": 0, "prm_forwarded_tokens": 0} for side in SIDES}
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
                queried, forwarded, start = prm.queried_tokens, prm.forwarded_tokens, time.perf_counter()
                with PeakRss() as memory:
                    await asyncio.gather(*(one(side, problem) for problem in problems))
                mine = found[side]
                mine["wall_s"] += time.perf_counter() - start
                mine["prm_queried_tokens"] += prm.queried_tokens - queried
                mine["prm_forwarded_tokens"] += prm.forwarded_tokens - forwarded
                mine["peak_rss_mib"] = max(mine["peak_rss_mib"], memory.peak_mib)
                mine["after_rss_mib"] = rss_mib()
    finally:
        await scorer.close()
    return found


def latency_ratio(found: dict[str, dict]) -> tuple[float, str]:
    """(beam search p50 / best-of-N p50, the figure's detail)."""
    p50 = {side: statistics.median(found[side]["latency_s"]) for side in SIDES}
    tokens = {side: statistics.mean(found[side]["tokens"]) for side in SIDES}
    searches = len(found["beam_search"]["latency_s"])
    rate = {side: sum(found[side]["tokens"]) / found[side]["wall_s"] for side in SIDES}
    beam, best = found["beam_search"], found["best_of_n"]
    return p50["beam_search"] / p50["best_of_n"], (
        f"p50 {p50['beam_search']:.2f} vs {p50['best_of_n']:.2f} s; tokens per search "
        f"{tokens['beam_search']:.0f} vs {tokens['best_of_n']:.0f}; {searches} searches per side; "
        f"policy tokens/s {rate['beam_search']:.0f} vs {rate['best_of_n']:.0f}; PRM tokens forwarded/queried "
        f"{beam['prm_forwarded_tokens']}/{beam['prm_queried_tokens']} vs "
        f"{best['prm_forwarded_tokens']}/{best['prm_queried_tokens']}; RSS peak "
        f"{beam['peak_rss_mib']:.0f} vs {best['peak_rss_mib']:.0f} MiB, after {beam['after_rss_mib']:.0f} vs "
        f"{best['after_rss_mib']:.0f} MiB")
