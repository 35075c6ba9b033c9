"""An ASGI app served for real on a loopback port, in a thread of this process,
recording every request it answers (path, headers, JSON body): the far side of
`--engine openai` and a `--prm` URL, for tests that check what a front sends."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import httpx
import uvicorn

from openr.server.launcher import HOST, free_port

START_TIMEOUT_S = 30


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: dict | None


class _Recorder:
    """ASGI middleware: reads the body, notes the request, replays the body to the app."""

    def __init__(self, app, seen: list[SeenRequest]):
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.seen.append(SeenRequest(scope["path"], headers, json.loads(raw) if raw else None))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


@dataclass
class RecordingBackend:
    url: str
    seen: list[SeenRequest]


@contextmanager
def recording_backend(app) -> Iterator[RecordingBackend]:
    """Serve `app` until the block ends; `backend.seen` lists what it was sent."""
    seen: list[SeenRequest] = []
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_Recorder(app, seen), host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(url):
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the recording backend on {url} did not start")
        time.sleep(0.05)
    seen.clear()  # the health probes
    try:
        yield RecordingBackend(url, seen)
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
