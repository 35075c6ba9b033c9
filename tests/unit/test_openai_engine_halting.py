"""The remote engine asks a vLLM-like server for top-k log-probabilities and reads
them, and a search's monitor halts a remote sample by closing its stream: the
server stops sending (its stream is closed) long before the sample's end."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from openr.engine.base import SamplingConfig
from openr.engine.openai_engine import OpenAIEngine
from tests.support.recording_backend import recording_backend

pytestmark = pytest.mark.anyio
TOKENS = 200  # the remote sample's length when nothing stops it
EVENT_GAP_S = 0.01


class Stream:
    """What the remote's one stream did: events sent, and whether it was closed early."""

    sent = 0
    closed_early = False


def vllm_like(stream: Stream) -> Starlette:
    """Streams TOKENS tokens, one per event, each with vLLM's completions logprobs."""

    async def completions(request):
        body = await request.json()
        k = body["logprobs"]

        async def events():
            try:
                for i in range(TOKENS):
                    top = {f"t{j}": -0.5 * (j + 1) for j in range(k + 1)}  # k alternatives and the sampled token
                    choice = {"index": 0, "text": "t0", "finish_reason": None,
                              "logprobs": {"tokens": ["t0"], "token_logprobs": [-0.5], "top_logprobs": [top]}}
                    yield f"data: {json.dumps({'choices': [choice]})}\n\n"
                    stream.sent += 1
                    await asyncio.sleep(EVENT_GAP_S)
                yield "data: [DONE]\n\n"
            except BaseException:
                stream.closed_early = True
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(_):
        return JSONResponse({"data": [{"id": "m", "max_model_len": 4096}]})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models),
                             Route("/health", lambda _: Response())])


class HaltAt:
    def __init__(self, at: int):
        self.at, self.tops = at, []

    def __call__(self, logprob: float, top) -> bool:
        self.tops.append(list(top))
        return len(self.tops) >= self.at


async def test_a_halted_remote_sample_closes_its_stream_and_the_remote_stops_sending():
    stream = Stream()
    with recording_backend(vllm_like(stream)) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        monitor = HaltAt(5)
        halted = await engine.sample("2 + 2 =", SamplingConfig(TOKENS, top_logprobs=2, monitor=monitor))
        for _ in range(200):  # the hang-up reaches the remote's stream
            if stream.closed_early:
                break
            await asyncio.sleep(EVENT_GAP_S)
        await engine.close()
        asked = [r.body for r in backend.seen if r.path == "/v1/completions"]
    assert halted.finish == "halted" and halted.num_tokens == 5
    assert monitor.tops[0] == [-0.5, -1.0]  # the top 2, best first, of what the remote sent
    assert asked[0]["logprobs"] == 2
    assert stream.closed_early and stream.sent < TOKENS


async def test_a_remote_sending_logprobs_alone_still_shows_the_monitor_every_token():
    async def completions(_):
        events = [{"choices": [{"index": 0, "text": "a", "finish_reason": None,
                                "logprobs": {"token_logprobs": [-0.25]}}]}] * 3
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                            Route("/v1/models", lambda _: JSONResponse({"data": [{"id": "m"}]})),
                            Route("/health", lambda _: Response())])
    with recording_backend(app) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        monitor = HaltAt(10)
        done = await engine.sample("x", SamplingConfig(8, top_logprobs=3, monitor=monitor))
        await engine.close()
    assert monitor.tops == [[], [], []] and done.num_tokens == 3
