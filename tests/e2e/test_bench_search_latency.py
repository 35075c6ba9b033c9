"""Figure 5's accounting (bench/search_latency.py) on the real openr-arith policy and PRM:
what a search under load costs in memory and PRM tokens, besides its latency."""

from __future__ import annotations

import asyncio

import pytest

from bench.search_bench import prepare
from bench.search_latency import PeakRss, in_flight_latencies, latency_ratio, rss_mib
from openr.engine import make_engine
from openr.engine.checkpoints import ARITH_ALIAS, split_bundle
from openr.prm import load_prm
from openr.search import build_config

pytestmark = pytest.mark.e2e


def test_peak_rss_sees_memory_that_is_freed_before_the_block_ends():
    with PeakRss() as memory:
        before = rss_mib()
        block = bytearray(256 * 1024 * 1024)  # touched below, so resident
        block[::4096] = b"x" * len(block[::4096])
        asyncio.run(asyncio.sleep(0.5))  # the watcher reads at least once meanwhile
        del block
    assert memory.peak_mib >= before + 200 > rss_mib()


def test_in_flight_latencies_count_prm_tokens_and_memory_per_side():
    policy_dir, prm_dir = split_bundle(ARITH_ALIAS)
    prm = load_prm(prm_dir, device="cpu")
    engine = make_engine("hf", policy_dir, "cpu")
    config = build_config("beam_search", {"n": 4, "beam_width": 2, "seed": 0})

    async def measure():
        await engine.start()
        try:
            return await in_flight_latencies(engine, prm, await prepare(engine, 2), config, rounds=1, in_flight=2)
        finally:
            await engine.close()

    found = asyncio.run(measure())
    for side in ("beam_search", "best_of_n"):
        mine = found[side]
        assert len(mine["latency_s"]) == 2 and mine["wall_s"] >= max(mine["latency_s"])
        assert 0 < mine["prm_forwarded_tokens"] <= mine["prm_queried_tokens"]
        assert mine["peak_rss_mib"] + 16 >= mine["after_rss_mib"] > 0  # read just after the peak watch ends
    beam = found["beam_search"]  # each depth re-asks for the steps before it: the prefix cache serves them
    assert beam["prm_forwarded_tokens"] < beam["prm_queried_tokens"]
    ratio, detail = latency_ratio(found)
    assert ratio > 0 and "PRM tokens forwarded/queried" in detail and "RSS peak" in detail
