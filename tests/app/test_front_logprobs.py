"""Per-token log-probabilities through a front (`--engine openai`): `openr serve`'s
/v1/completions reports each token's text, log-probability and alternatives in
vLLM's shape, and a front reads them into a chat completion's `logprobs`, the
end-of-text token counted but not shown, as the hf and vllm engines do."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from openr.engine.base import SamplingConfig
from openr.engine.openai_engine import OpenAIEngine
from openr.server.app import build_app
from openr.server.settings import ServerSettings
from tests.app.test_api_hostile import error_of, post_to
from tests.app.test_app import chat
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import FakeEngine
from tests.support.recording_backend import recording_backend

pytestmark = pytest.mark.anyio
# What FakeEngine writes for max_tokens 3: one word a token at -0.5, each with the
# next two words as alternatives at -1.5.
WORDS = ["alpha", " beta", " gamma"]
TOP = [{"alpha": -0.5, " beta": -1.5, " gamma": -1.5}, {" beta": -0.5, " gamma": -1.5, " delta": -1.5},
       {" gamma": -0.5, " delta": -1.5, " epsilon": -1.5}]


@asynccontextmanager
async def front_on(replica_engine):
    """A front app whose engine is a replica `openr serve` on `replica_engine`."""
    with recording_backend(build_app(replica_engine, MODEL, ServerSettings())) as backend:
        async with serving(OpenAIEngine(backend.url, MODEL)) as (http, sdk, _):
            yield http, sdk, backend


async def test_a_replica_reports_completion_logprobs_in_vllms_shape():
    body = {"model": MODEL, "prompt": "go", "max_tokens": 3, "logprobs": 2}
    async with serving() as (http, _, engine):
        whole = (await post_to(http, "/v1/completions", body)).json()["choices"][0]["logprobs"]
        text = (await post_to(http, "/v1/completions", {**body, "stream": True})).text
    chunks = [json.loads(line[len("data: "):])["choices"][0]["logprobs"] for line in text.splitlines()
              if line.startswith("data: {")]
    assert whole == {"tokens": WORDS, "token_logprobs": [-0.5] * 3, "top_logprobs": TOP, "text_offset": [0, 5, 10]}
    assert [p.top_logprobs for p in engine.params] == [2, 2]
    joined = {key: [v for chunk in chunks if chunk for v in chunk[key]] for key in whole}
    assert joined == whole  # the streamed chunks' offsets run on across the choice


async def test_alternatives_need_an_engine_that_reports_them():
    async with serving(FakeEngine(features=frozenset())) as (http, _, _):
        error = error_of(await post_to(http, "/v1/completions", {"prompt": "go", "max_tokens": 2, "logprobs": 1}))
        assert error["param"] == "logprobs"
        plain = (await post_to(http, "/v1/completions", {"prompt": "go", "max_tokens": 2, "logprobs": 0})).json()
    assert plain["choices"][0]["logprobs"]["token_logprobs"] == [-0.5, -0.5]


async def test_a_front_gives_the_replicas_tokens_with_their_top_alternatives():
    kwargs = chat(max_tokens=3, logprobs=True, top_logprobs=2)
    async with front_on(FakeEngine()) as (_, sdk, backend):
        whole = await sdk.chat.completions.create(**kwargs)
        stream = await sdk.chat.completions.create(**kwargs, stream=True)
        streamed = [t async for c in stream for choice in c.choices if choice.logprobs
                    for t in choice.logprobs.content]
        asked = [r.body["logprobs"] for r in backend.seen if r.path == "/v1/completions"]
        plain = await sdk.chat.completions.create(**chat(max_tokens=3))
    content = whole.choices[0].logprobs.content
    assert asked == [2, 2]
    assert [(t.token, t.logprob) for t in content] == [(w, -0.5) for w in WORDS]
    # the two most likely of the sampled token and its alternatives, ranked
    assert [[(a.token, a.logprob) for a in t.top_logprobs] for t in content] == \
        [list(top.items())[:2] for top in TOP]
    assert [t.model_dump() for t in streamed] == [t.model_dump() for t in content]
    assert plain.choices[0].logprobs is None


def remote_ending_in_eos() -> Starlette:
    """A vLLM-like remote: one token of text, then its end-of-text token, which
    vLLM's completions logprobs include (with the special token's text)."""

    async def completions(_):
        chunks = [{"text": "hi", "finish_reason": None,
                   "logprobs": {"tokens": ["hi"], "token_logprobs": [-0.25], "top_logprobs": [{"hi": -0.25}]}},
                  {"text": "", "finish_reason": "stop", "stop_reason": None,
                   "logprobs": {"tokens": ["<|im_end|>"], "token_logprobs": [-0.01],
                                "top_logprobs": [{"<|im_end|>": -0.01}]}}]
        events = [f"data: {json.dumps({'choices': [{'index': 0, **c}]})}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        return StreamingResponse(iter(events), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                             Route("/v1/models", lambda _: JSONResponse({"data": [{"id": "m"}]})),
                             Route("/health", lambda _: Response())])


async def test_the_end_of_text_token_is_counted_not_shown():
    with recording_backend(remote_ending_in_eos()) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        deltas = [d async for d in engine.stream("x", SamplingConfig(8, top_logprobs=1))]
        await engine.close()
    assert [t.token for d in deltas for t in d.tokens] == ["hi"]
    assert sum(d.num_tokens for d in deltas) == 2 and deltas[-1].finish == "eos"
