"""Cross-request micro-batching for a PRM.

Every live search calls `score` on its own schedule; scoring each call alone
leaves the PRM running batches of a few candidates. The batcher holds a call
for at most `max_wait_ms` while others arrive and hands all of them, up to
`micro_batch_size` candidates, to the PRM in one `score_batch` call. An
in-process PRM runs them in forward passes of its own size (rows of similar
length together; see openr.prm.causal_lm): one pass on a GPU, several of 16
on a CPU, where larger passes measured slower per token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from openr.session import SearchSession, current_session, in_session

logger = logging.getLogger(__name__)

DEFAULT_MICRO_BATCH_SIZE = 64  # candidates per score_batch call, gathered across requests
DEFAULT_MAX_WAIT_MS = 5.0


@dataclass
class _Call:
    question: str
    candidates: Sequence[Sequence[str]]
    future: asyncio.Future = field(repr=False)
    session: SearchSession | None = None  # the search that made the call


class MicroBatchingScorer:
    """A `StepScorer` in front of a batch scorer (`score_batch(pairs) -> scores`).

    `on_batch(candidates, seconds)` and `on_queue(depth)` report to metrics.
    A call cancelled while waiting is dropped before its batch runs.
    """

    def __init__(self, scorer, micro_batch_size: int = DEFAULT_MICRO_BATCH_SIZE,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS, on_batch: Callable[[int, float], None] | None = None,
                 on_queue: Callable[[int], None] | None = None):
        if micro_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("micro_batch_size must be >= 1 and max_wait_ms >= 0")
        self.scorer = scorer
        self.per_session = getattr(scorer, "session_affine", False)  # never mix searches in one batch
        self.micro_batch_size = micro_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_queue = on_queue or (lambda depth: None)
        self._queue: list[_Call] = []
        self._shared_last_batch = True  # did the last batch serve more than one call?
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        if not candidates:
            return []
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="prm-micro-batcher")
        call = _Call(question, candidates, asyncio.get_running_loop().create_future(), current_session())
        self._queue.append(call)
        self._on_queue(self._queued_candidates())
        self._arrived.set()
        try:
            return await call.future
        finally:
            if call in self._queue:  # cancelled before its batch started
                self._queue.remove(call)
                self._on_queue(self._queued_candidates())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def _queued_candidates(self) -> int:
        return sum(len(c.candidates) for c in self._queue)

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            # Waiting only pays when other searches are scoring too; a lone
            # search would just lose max_wait_ms on every call.
            wait_s = self.max_wait_s if self._shared_last_batch else 0.0
            deadline = time.monotonic() + wait_s
            while self._queued_candidates() < self.micro_batch_size and time.monotonic() < deadline:
                await asyncio.sleep(min(self.max_wait_s / 4, deadline - time.monotonic()))
            while self._queue:
                batches = [self._take_batch()]
                while self.per_session and self._queue:
                    batches.append(self._take_batch())
                self._shared_last_batch = any(len(batch) > 1 for batch in batches)
                await asyncio.gather(*(self._score_one_batch(batch) for batch in batches))

    def _take_batch(self) -> list[_Call]:
        """Whole calls, first come first served, up to micro_batch_size candidates
        (a single larger call goes alone rather than being split); with
        `per_session`, only calls of the first call's search."""
        session = self._queue[0].session
        batch, size = [], 0
        for call in list(self._queue):
            if self.per_session and call.session != session:
                continue
            if batch and size + len(call.candidates) > self.micro_batch_size:
                break
            self._queue.remove(call)
            batch.append(call)
            size += len(call.candidates)
        self._on_queue(self._queued_candidates())
        return batch

    async def _score_one_batch(self, batch: list[_Call]) -> None:
        live = [c for c in batch if not c.future.done()]
        pairs = [(c.question, steps) for c in live for steps in c.candidates]
        if not pairs:
            return
        start = time.perf_counter()
        try:
            with in_session(live[0].session if self.per_session else None):  # to_thread copies it
                scores = await asyncio.to_thread(self.scorer.score_batch, pairs)
        except Exception as exc:
            if len(live) > 1:  # one call's bad input must not fail the others: score each alone
                logger.warning("PRM batch of %d calls failed (%s); scoring them one by one", len(live), exc)
                for call in live:
                    await self._score_one_batch([call])
                return
            if not isinstance(exc, ValueError):
                logger.exception("PRM batch failed")
            if not live[0].future.done():
                live[0].future.set_exception(exc)
            return
        self._on_batch(len(pairs), time.perf_counter() - start)
        offset = 0
        for call in live:
            n = len(call.candidates)
            if not call.future.done():
                call.future.set_result(scores[offset : offset + n])
            offset += n
