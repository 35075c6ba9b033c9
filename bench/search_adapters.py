"""The stand-ins `search_bench.py` puts around the real policy and PRM.

Recorders log the calls a real search makes so they can be replayed alone;
`PerNodePolicy` and `PerCandidateScorer` serve the same search one tree node
and one candidate per model call, as OpenR's reference loop does; and
`CountingVLLMEngine` is the served vLLM engine with its prefix-cache statistics
counted. Each implements the same protocol as what it wraps, so the
strategies run unchanged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from unittest import mock

from openr.engine.base import Engine
from openr.engine.vllm_engine import VLLMEngine
from openr.search import Step, StepScorer

# Policy.generate_steps arguments: (prefixes, n, stop, max_tokens, temperature, top_p, seed).
PolicyCall = tuple[list[str], int, list[str], int, float, float, int | None]
# StepScorer.score arguments: (question, candidates).
ScoreCall = tuple[str, list[list[str]]]


class RecordingPolicy:
    """Forwards to `engine` and logs every `generate_steps` call in order."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.calls: list[PolicyCall] = []

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        call = (list(prefixes), n, list(stop), max_tokens, temperature, top_p, seed)
        self.calls.append(call)
        return await self._engine.generate_steps(*call)


class RecordingScorer:
    """Forwards to `scorer` and logs every `score` call in order."""

    def __init__(self, scorer: StepScorer):
        self._scorer = scorer
        self.calls: list[ScoreCall] = []

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        self.calls.append((question, [list(steps) for steps in candidates]))
        return await self._scorer.score(question, candidates)


class UnbatchedScorer:
    """`StepTagPRM` as a `StepScorer` with no coalescing: each call is one
    `score_batch` of its own candidates in a worker thread, so concurrent
    searches run side by side in threads, never in one forward pass."""

    def __init__(self, prm):
        self._prm = prm

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        return await asyncio.to_thread(self._prm.score_batch, [(question, steps) for steps in candidates])


class PerNodePolicy:
    """The policy served one sample at a time: one engine call per prefix per
    sample, each awaited before the next. Sample j of prefix i gets seed
    `seed + i * n + j`, the seed `Engine.generate_steps` would give it, so both
    serving paths draw the same samples."""

    def __init__(self, engine: Engine):
        self._engine = engine

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        rows: list[list[Step]] = []
        for i, prefix in enumerate(prefixes):
            row = []
            for j in range(n):
                sample_seed = None if seed is None else seed + i * n + j
                [[step]] = await self._engine.generate_steps([prefix], 1, stop, max_tokens, temperature, top_p,
                                                             sample_seed)
                row.append(step)
            rows.append(row)
        return rows


class PerCandidateScorer:
    """The PRM served one candidate per forward pass, each awaited before the next."""

    def __init__(self, prm):
        self._prm = prm

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        scores = []
        for steps in candidates:
            [row] = await asyncio.to_thread(self._prm.score_batch, [(question, steps)])
            scores.append(row)
        return scores


def prefix_cache_counter():
    """A vLLM stat logger that sums prefix-cache token queries and hits.

    Built lazily because vLLM is optional: `--engine hf` must not import it.
    """
    from vllm.v1.metrics.loggers import StatLoggerBase

    class PrefixCacheCounter(StatLoggerBase):
        def __init__(self):
            self.queries = 0
            self.hits = 0

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            if scheduler_stats is None:
                return
            stats = scheduler_stats.prefix_cache_stats
            if stats.reset:  # reset_prefix_cache ran: count from here on, as vLLM's own logger does
                self.queries = self.hits = 0
            self.queries += stats.queries
            self.hits += stats.hits

        def log_engine_initialized(self):
            pass

    return PrefixCacheCounter()


class CountingVLLMEngine(VLLMEngine):
    """`VLLMEngine` whose AsyncLLM reports prefix-cache statistics to `self.prefix_cache`.

    Handing `from_engine_args` a custom stat logger is how vLLM reports its
    statistics to our code. Patching that one call, rather than copying
    `VLLMEngine.start`, keeps every other engine setting exactly as served.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix_cache = prefix_cache_counter()

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        counter = self.prefix_cache
        with_counter = functools.partial(AsyncLLM.from_engine_args, stat_loggers=[lambda config, index: counter])
        with mock.patch.object(AsyncLLM, "from_engine_args", with_counter):
            await super().start()

    async def reset_prefix_cache(self) -> None:
        if not await self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache (requests still running)")

    @property
    def block_size(self) -> int:
        return self.llm.vllm_config.cache_config.block_size
