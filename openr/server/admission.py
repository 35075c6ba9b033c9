"""Admission control: at most `max_concurrent` requests run, `max_queue` wait,
and the rest are turned away at once with 429 + Retry-After (the OpenAI SDK
retries those), instead of piling up until every client times out."""

from __future__ import annotations

import asyncio

from openr.server.errors import APIError
from openr.server.metrics import ServerMetrics

RETRY_AFTER_S = 1


class Slot:
    """A running-request slot; `release` may be called more than once."""

    def __init__(self, admission: "Admission"):
        self._admission = admission
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission._release()


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int, metrics: ServerMetrics):
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._free = asyncio.Condition()
        self._metrics = metrics

    async def acquire(self) -> Slot:
        if self.running >= self.max_concurrent and self.waiting >= self.max_queue:
            self._metrics.rejected.labels(self._metrics.model_name).inc()
            raise APIError(429, f"server is at capacity ({self.max_concurrent} running, {self.max_queue} "
                                "queued); retry shortly", code="rate_limit_exceeded",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        async with self._free:
            self.waiting += 1
            self._publish()
            try:
                await self._free.wait_for(lambda: self.running < self.max_concurrent)
            finally:
                self.waiting -= 1
            self.running += 1
            self._publish()
        return Slot(self)

    def _release(self) -> None:
        self.running -= 1
        self._publish()
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._free:
            self._free.notify()

    def _publish(self) -> None:
        self._metrics.admission(self.running, self.waiting)
