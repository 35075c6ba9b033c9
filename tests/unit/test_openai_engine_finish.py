"""The remote engine tells an end of text from a stop string as vLLM reports them
(`finish_reason` "stop" with `stop_reason` None, or the string): a search through
a vLLM pool must see a solution end, not a step, where the model wrote eos."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openr.engine.base import SamplingConfig
from openr.engine.openai_engine import OpenAIEngine
from tests.support.recording_backend import recording_backend

pytestmark = pytest.mark.anyio
NO_KEY = object()  # a server that sends no stop_reason at all (OpenAI proper)


def vllm_like(stop_reason) -> Starlette:
    """A server answering every completion with one word, then finish_reason "stop" and this stop_reason."""

    async def completions(_):
        last = {"index": 0, "text": "", "finish_reason": "stop"}
        if stop_reason is not NO_KEY:
            last["stop_reason"] = stop_reason
        events = [{"choices": [{"index": 0, "text": "four", "finish_reason": None}]}, {"choices": [last]}]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")

    async def models(_):
        return JSONResponse({"data": [{"id": "m", "max_model_len": 64}]})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models),
                             Route("/health", lambda _: Response())])


@pytest.mark.parametrize("stop_reason, finish", [(None, "eos"), ("\n\n", "stop"), (13, "stop"), (NO_KEY, "stop")])
async def test_end_of_text_and_stop_string_are_told_apart(stop_reason, finish):
    with recording_backend(vllm_like(stop_reason)) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        deltas = [d async for d in engine.stream("2 + 2 =", SamplingConfig(max_tokens=8, stop=("\n\n",)))]
        await engine.close()
    assert "".join(d.text for d in deltas) == "four"
    assert [d.finish for d in deltas] == [None, finish]
    assert deltas[-1].stop_reason == (stop_reason if isinstance(stop_reason, str) else None)
