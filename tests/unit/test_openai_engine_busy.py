"""A remote that is full for now (429, as `openr serve` answers past its queue,
or 503) is asked again after its Retry-After, so a labelling run or a search
through a busy pool waits out a burst; one that stays full, or answers any
other error, still fails the request with the remote's status and message. And a
client that sends bursts (the labeller) bounds what it has at the remote at once
(`max_in_flight`, `openr train label --max-requests`), so it is not turned away."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openr.engine import openai_engine
from openr.engine.base import EngineRequestError
from openr.engine.openai_engine import OpenAIEngine
from tests.support.recording_backend import recording_backend

pytestmark = pytest.mark.anyio


def busy_for(refusals: int, status: int = 429, retry_after: str | None = "0") -> Starlette:
    """A remote that refuses its first `refusals` completions and tokenizations with `status`."""
    left = {"n": refusals}

    def refused() -> Response | None:
        if left["n"] == 0:
            return None
        left["n"] -= 1
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return JSONResponse({"error": {"message": "server is at capacity; retry shortly"}}, status_code=status,
                            headers=headers)

    async def completions(_):
        events = [{"choices": [{"index": 0, "text": "four", "finish_reason": None}]},
                  {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}]
        return refused() or Response("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n",
                                     media_type="text/event-stream")

    async def tokenize(request):
        return refused() or JSONResponse({"tokens": [1, 2, 3]})

    async def models(_):
        return JSONResponse({"data": [{"id": "m", "max_model_len": 64}]})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models),
                             Route("/tokenize", tokenize, methods=["POST"]), Route("/health", lambda _: Response())])


async def calls(app: Starlette) -> tuple[str, list[str]]:
    """One completion through the engine, and the paths the remote was sent."""
    with recording_backend(app) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        try:
            text = (await engine.generate_steps(["2 + 2 ="], 1, ["\n\n"], 4, 1.0))[0][0].text
        finally:
            await engine.close()
    return text, [r.path for r in backend.seen if r.path == "/v1/completions"]


@pytest.mark.parametrize("status", [429, 503])
async def test_a_busy_remote_is_asked_again_until_it_answers(status):
    text, sent = await calls(busy_for(3, status))
    assert text == "four"
    assert len(sent) == 4


async def test_without_retry_after_the_engine_backs_off_and_still_gets_the_answer(monkeypatch):
    monkeypatch.setattr(openai_engine, "BUSY_BACKOFF_S", 0.01)
    text, sent = await calls(busy_for(2, retry_after=None))
    assert (text, len(sent)) == ("four", 3)


async def test_a_remote_that_stays_full_fails_with_its_own_status(monkeypatch):
    monkeypatch.setattr(openai_engine, "BUSY_WAIT_S", 0.2)
    monkeypatch.setattr(openai_engine, "BUSY_BACKOFF_S", 0.05)
    with pytest.raises(EngineRequestError) as caught:
        await calls(busy_for(10_000, retry_after=None))
    assert caught.value.status == 429 and "at capacity" in str(caught.value)


async def test_another_error_is_not_retried():
    with pytest.raises(EngineRequestError) as caught:
        await calls(busy_for(1, status=400))
    assert caught.value.status == 400


async def test_tokenize_waits_out_a_busy_remote_too():
    with recording_backend(busy_for(2)) as backend:
        engine = OpenAIEngine(backend.url)
        await engine.start()
        try:
            assert await engine.tokenize("a b c") == [1, 2, 3]
        finally:
            await engine.close()
    assert [r.path for r in backend.seen].count("/tokenize") == 3


def counting_remote(seen: dict) -> Starlette:
    """A remote that answers every completion after a short wait, noting the most it held at once."""

    async def completions(_):
        seen["now"] += 1
        seen["peak"] = max(seen["peak"], seen["now"])
        await asyncio.sleep(0.05)
        seen["now"] -= 1
        events = [{"choices": [{"index": 0, "text": "x", "finish_reason": "length"}]}]
        return Response("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n",
                        media_type="text/event-stream")

    async def models(_):
        return JSONResponse({"data": [{"id": "m", "max_model_len": 64}]})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models),
                             Route("/health", lambda _: Response())])


@pytest.mark.parametrize("bound, peak", [(3, 3), (None, 12)])
async def test_max_in_flight_bounds_what_the_remote_holds_at_once(bound, peak):
    seen = {"now": 0, "peak": 0}
    with recording_backend(counting_remote(seen)) as backend:
        engine = OpenAIEngine(backend.url, max_in_flight=bound)
        await engine.start()
        try:
            steps = (await engine.generate_steps(["2 + 2 ="], 12, ["\n\n"], 4, 1.0))[0]
        finally:
            await engine.close()
    assert [s.text for s in steps] == ["x"] * 12
    assert seen["peak"] == peak


def test_max_in_flight_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        OpenAIEngine("http://127.0.0.1:1/v1", max_in_flight=0)


def test_the_labeller_bounds_its_requests_to_a_url():
    from openr.training.labels.pipeline import DEFAULT_MAX_REQUESTS, _engine

    args = {"api_key": None, "max_requests": 5}
    assert _engine("http://127.0.0.1:1/v1", args)._slots._value == 5
    assert DEFAULT_MAX_REQUESTS * 2 <= 32 + 128  # a policy and a completer on one default openr serve


@pytest.mark.parametrize("retry_after, first, later", [
    ("2", 2.0, 2.0), ("nan", 0.5, 4.0), ("inf", 0.5, 4.0), ("-5", 0.5, 0.5), ("1e9", 120.0, 116.0),
    ("Wed, 21 Oct 2026 07:28:00 GMT", 0.5, 4.0)])
def test_a_busy_pause_is_finite_and_inside_the_wait_left(retry_after, first, later):
    """A Retry-After that is no finite number of seconds (a date, or what a hostile
    remote sends) backs off as if absent; none waits past BUSY_WAIT_S in all."""
    from openr.engine.openai_engine import _busy_pause

    response = httpx.Response(429, headers={"Retry-After": retry_after})
    assert (_busy_pause(response, 0.0), _busy_pause(response, 4.0)) == (first, later)
    assert _busy_pause(response, openai_engine.BUSY_WAIT_S) is None
