"""Figure 4 of search_bench.py (vllm only): the share of prompt tokens vLLM's
prefix cache served during one pass of the beam searches on an emptied cache,
next to the most a perfect cache could have served (`cacheable_tokens`).
"""

from __future__ import annotations

from bench.search_adapters import RecordingPolicy
from openr.prm.batcher import MicroBatchingScorer
from openr.search import STRATEGIES, Budget


async def prefix_cache_hits(engine, prm, problems, config) -> tuple[float, str, dict]:
    """(hit rate, the figure's detail, its data) of one pass of beam searches with
    `config` over `problems`, on `engine` (a CountingVLLMEngine) and `prm`, both caches emptied first."""
    batched = MicroBatchingScorer(prm)
    recorder = RecordingPolicy(engine)
    await engine.reset_prefix_cache()
    prm.cache.clear()
    for problem in problems:
        await STRATEGIES["beam_search"].run(problem, recorder, batched, config, Budget())
    await batched.close()
    counter = engine.prefix_cache
    rate = counter.hits / counter.queries if counter.queries else 0.0
    ceiling = await cacheable_tokens(engine, recorder.calls, engine.block_size)
    detail = (f"{counter.hits} of {counter.queries} prompt tokens cached; at most {ceiling} could be "
              f"(repeated whole blocks of {engine.block_size} tokens)")
    return rate, detail, {"hits": counter.hits, "queries": counter.queries, "cacheable": ceiling}


async def cacheable_tokens(engine, calls, block_size: int) -> int:
    """Prompt tokens of `calls` a perfect prefix cache would serve, never evicting.

    vLLM caches whole blocks and always computes a prompt's last token, so a
    sample can reuse the leading full blocks of its first `len - 1` tokens that
    an earlier sample sent; the n samples of one prefix share all of them.
    """
    sent: set[tuple[int, ...]] = set()
    total = 0
    for prefixes, n, *_ in calls:
        for prefix in prefixes:
            ids = await engine.tokenize(prefix)
            blocks = [tuple(ids[: (k + 1) * block_size]) for k in range((len(ids) - 1) // block_size)]
            seen = next((k for k, key in enumerate(blocks) if key not in sent), len(blocks))
            total += (seen + (n - 1) * len(blocks)) * block_size
            sent.update(blocks)
    return total
