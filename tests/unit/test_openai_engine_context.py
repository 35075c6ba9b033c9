"""The remote engine keeps a step inside the remote's context: a step's
max_tokens is cut to what max_model_len (from the remote's /v1/models) leaves
after the prompt, where the remote, as vLLM does, refuses prompt + max_tokens
over its context with a 400."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openr.engine.openai_engine import OpenAIEngine
from tests.support.recording_backend import recording_backend

pytestmark = pytest.mark.anyio
CONTEXT = 64  # the remote's max_model_len, in tokens: one per word here


def vllm_like(max_model_len: int | None) -> Starlette:
    """A remote with a context of `max_model_len` words, refusing what overflows it as vLLM does."""

    async def models(_):
        return JSONResponse({"data": [{"id": "m", "max_model_len": max_model_len}]})

    async def tokenize(request):
        return JSONResponse({"tokens": list(range(len((await request.json())["prompt"].split())))})

    async def completions(request):
        body = await request.json()
        prompt_tokens = len(body["prompt"].split())
        if max_model_len and prompt_tokens + body["max_tokens"] > max_model_len:
            return JSONResponse({"error": {"message": "maximum context length exceeded", "param": "max_tokens"}},
                                status_code=400)
        last = {"index": 0, "text": "", "finish_reason": "length", "stop_reason": None}
        events = [{"choices": [{"index": 0, "text": " x", "finish_reason": None}]}, {"choices": [last]}]
        return Response("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n",
                        media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/tokenize", tokenize, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"]),
                             Route("/health", lambda _: Response())])


async def steps_sent(max_model_len: int | None, prompt: str, max_tokens: int):
    """What a search's step call on `prompt` returns, and the paths and max_tokens the remote was sent."""
    with recording_backend(vllm_like(max_model_len)) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        steps = (await engine.generate_steps([prompt], 2, ["\n\n"], max_tokens, 1.0))[0]
        await engine.close()
    sent = [(r.path, r.body.get("max_tokens")) for r in backend.seen if r.path != "/v1/models"]
    return steps, sent


async def test_a_step_is_cut_to_the_room_the_context_leaves():
    steps, sent = await steps_sent(CONTEXT, "word " * 50, 32)
    assert [s.finish_reason for s in steps] == ["length", "length"]
    assert sorted(sent, key=str) == sorted([("/tokenize", None)] * 2 + [("/v1/completions", 14)] * 2, key=str)


async def test_a_prompt_that_surely_fits_is_not_tokenized():
    _, sent = await steps_sent(CONTEXT, "2 + 2 =", 8)
    assert sent == [("/v1/completions", 8)] * 2


async def test_a_prompt_that_fills_the_context_ends_at_once_unsent():
    steps, sent = await steps_sent(CONTEXT, "word " * CONTEXT, 8)
    assert [(s.text, s.num_tokens, s.finish_reason) for s in steps] == [("", 0, "length")] * 2
    assert sent == [("/tokenize", None)] * 2


async def test_a_remote_naming_no_context_gets_max_tokens_as_asked():
    _, sent = await steps_sent(None, "word " * 50, 32)
    assert sent == [("/v1/completions", 32)] * 2


async def test_the_room_counts_the_prompt_as_the_remote_tokenizes_it():
    with recording_backend(vllm_like(CONTEXT)) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        fitted = [await engine.fit_max_tokens("word " * words, 32) for words in (10, 32, 40, 63, 64, 70)]
        await engine.close()
    assert fitted == [32, 32, 24, 1, 0, 0]
