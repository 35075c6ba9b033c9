"""The app over ASGI with a fake engine: wire format, errors, auth, admission, metrics."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from openr.server.app import build_app
from openr.server.metrics import metric_in as metric
from openr.server.settings import ServerSettings
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import FakeEngine

KEY = "sekret"
pytestmark = pytest.mark.anyio


def chat(**overrides):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(overrides)
    return body


async def test_non_streaming_completion_has_openai_shape():
    async with serving() as (_, sdk, _):
        r = await sdk.chat.completions.create(**chat(max_tokens=3))
    assert r.choices[0].message.content == "alpha beta gamma"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + 3
    assert r.id.startswith("chatcmpl-") and r.model == MODEL


async def test_stop_string_ends_completion_and_is_not_returned():
    async with serving() as (_, sdk, _):
        r = await sdk.chat.completions.create(**chat(max_tokens=8, stop=[" gam"]))
    assert r.choices[0].message.content == "alpha beta"
    assert r.choices[0].finish_reason == "stop"


async def test_streaming_follows_openai_chunk_rules():
    async with serving() as (http, _, _):
        body = chat(max_tokens=3, n=2, seed=1, stream=True, stream_options={"include_usage": True})
        r = await http.post("/v1/chat/completions", json=body)
    lines = [line for line in r.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert [c["finish_reason"] for c in mine[:-1]] == [None] * (len(mine) - 1)
        assert mine[-1]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    texts = ["".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                     if c["choices"] and c["choices"][0]["index"] == i) for i in (0, 1)]
    assert texts == [" beta gamma delta", " gamma delta epsilon"]  # seed + choice index


@pytest.mark.parametrize("overrides, param", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": 17}, "n"),
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "no role"}]}, "messages.0.role"),
    ({"messages": "hello"}, "messages"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 256}, "max_tokens"),  # prompt + completion beyond the context
])
async def test_invalid_values_are_400_naming_the_param(overrides, param):
    async with serving() as (_, sdk, _):
        with pytest.raises(openai.BadRequestError) as err:
            await sdk.chat.completions.create(**chat(**overrides))
    assert err.value.status_code == 400
    assert err.value.body["param"] == param
    assert err.value.body["type"] == "invalid_request_error"


async def test_unknown_model_is_404_on_param_model():
    async with serving() as (_, sdk, _):
        with pytest.raises(openai.NotFoundError) as err:
            await sdk.chat.completions.create(**chat(model="gpt-9"))
    assert err.value.body["param"] == "model"


@pytest.mark.parametrize("content, headers", [
    (b"{not json", {"content-type": "application/json"}),
    (b"[1, 2]", {"content-type": "application/json"}),
    (b'{"messages": []}', {"content-type": "text/plain"}),
    (b"\xff\xfe", {"content-type": "application/json"}),
])
async def test_malformed_bodies_are_400_never_422(content, headers):
    async with serving() as (http, _, _):
        r = await http.post("/v1/chat/completions", content=content, headers=headers)
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_unknown_fields_are_ignored():
    async with serving() as (http, _, _):
        r = await http.post("/v1/chat/completions", json=chat(frobnicate=True, logit_bias={}))
    assert r.status_code == 200


async def test_api_key_guards_v1_but_not_health_or_metrics():
    async with serving(settings=ServerSettings(api_key=KEY)) as (http, sdk, _):
        assert (await sdk.chat.completions.create(**chat())).choices
        assert (await http.get("/v1/models")).status_code == 401
        wrong = await http.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        bad_sdk = openai.AsyncOpenAI(base_url="http://test/v1", api_key="nope", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad_sdk.chat.completions.create(**chat())


async def test_request_id_is_echoed_or_generated():
    async with serving() as (http, _, _):
        echoed = await http.get("/v1/models", headers={"X-Request-Id": "abc-123"})
        generated = await http.get("/v1/models")
    assert echoed.headers["x-request-id"] == "abc-123"
    assert len(generated.headers["x-request-id"]) >= 16


async def test_beyond_concurrency_and_queue_is_429_with_retry_after():
    engine = FakeEngine(delay_s=0.05)
    async with serving(engine, ServerSettings(max_concurrent=1, max_queue=1)) as (http, sdk, _):
        running = asyncio.create_task(sdk.chat.completions.create(**chat(max_tokens=20)))
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(sdk.chat.completions.create(**chat(max_tokens=2)))
        await asyncio.sleep(0.1)
        with pytest.raises(openai.RateLimitError) as err:
            await sdk.chat.completions.create(**chat())
        assert err.value.response.headers["retry-after"] == "1"
        assert (await running).choices and (await queued).choices  # the others are undisturbed
        assert metric((await http.get("/metrics")).text, "openr:requests_rejected_total") == 1


async def test_models_lists_the_served_model():
    async with serving() as (_, sdk, _):
        models = await sdk.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_metrics_count_requests_and_tokens_exactly():
    async with serving() as (http, sdk, _):
        for max_tokens in (2, 3, 4):
            await sdk.chat.completions.create(**chat(max_tokens=max_tokens))
        await sdk.chat.completions.create(**chat(max_tokens=8, stop=" gamma"))
        text = (await http.get("/metrics")).text
    assert metric(text, "openr:request_success_total", finished_reason="length") == 3
    assert metric(text, "openr:request_success_total", finished_reason="stop") == 1
    # the token holding the stop string counts
    assert metric(text, "openr:generation_tokens_total", model_name=MODEL) == 2 + 3 + 4 + 3
    assert metric(text, "openr:e2e_request_latency_seconds_count") == 4
    assert metric(text, "openr:time_to_first_token_seconds_count") == 4
    assert metric(text, "openr:num_requests_running") == 0


async def test_health_is_503_until_the_engine_is_ready():
    class SlowStart(FakeEngine):
        async def start(self):
            await asyncio.sleep(0.3)

    app = build_app(SlowStart(), MODEL)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            assert (await http.get("/health")).status_code == 503
            early = await http.post("/v1/chat/completions", json=chat())
            assert early.status_code == 503
            await app.state.ready.wait()
            assert (await http.get("/health")).status_code == 200


async def test_rewards_scores_every_step_with_the_attached_prm():
    from tests.support.fake_engine import FakePRM

    async with serving(prm_factory=FakePRM, prm_name="fake-prm") as (http, sdk, _):
        body = {"model": MODEL, "question": "q", "candidates": [["good", "bad"], ["good"]]}
        r = await http.post("/v1/rewards", json=body)
        assert r.status_code == 200 and r.json()["scores"] == [[1.0, 0.0], [1.0]]
        assert (await sdk.models.list()).data[0].model_extra["prm"] == "fake-prm"
        empty = await http.post("/v1/rewards", json={"question": "q", "candidates": [[]]})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "candidates"


async def test_rewards_without_a_prm_is_400():
    async with serving() as (http, _, _):
        r = await http.post("/v1/rewards", json={"question": "q", "candidates": [["a"]]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "prm_unavailable"


async def test_version_reports_what_answered_and_never_the_api_key():
    from openr.server.settings import ServerSettings

    async with serving(settings=ServerSettings(api_key="s3cret", max_n=3)) as (http, _, _):
        report = (await http.get("/version")).json()
    assert report["model"] == MODEL and report["engine"] == "fake" and report["device"] == "cpu"
    assert report["settings"]["max_n"] == 3 and "api_key" not in report["settings"]
    assert "s3cret" not in str(report)
    assert report["machine"]["cpu"] and report["machine"]["torch_threads"] >= 1
