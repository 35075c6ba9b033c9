"""Every call one search makes to a remote policy or PRM carries the search's
session key, so a router can keep the search on one replica: the header (any
name), the body field on chat-shaped requests, one random key per search, and a
micro-batcher that never sends two searches' candidates under one key."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from openr.engine.openai_engine import OpenAIEngine
from openr.prm.batcher import MicroBatchingScorer
from openr.prm.remote import RemotePRM, VLLMPoolingPRM
from openr.server.app import build_app
from openr.server.settings import ServerSettings
from openr.session import DEFAULT_SESSION_HEADER, SearchSession, current_session, in_session
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import FakePRM, StepFakeEngine
from tests.support.recording_backend import recording_backend

pytestmark = pytest.mark.anyio
BEAM = {"strategy": "beam_search", "n": 2, "beam_width": 1, "max_steps": 3, "seed": 1}
SEARCH_PATHS = {"/tokenize", "/detokenize", "/v1/completions", "/v1/rewards"}


def backend_app():
    return build_app(StepFakeEngine(max_model_len=4096), MODEL, prm_factory=FakePRM)


async def run_searches(backend, questions: list[str], settings: ServerSettings = ServerSettings()):
    """One beam search per question, all at once, through a front on `backend` (policy and PRM)."""
    front = OpenAIEngine(backend.url)
    async with serving(front, settings, prm_factory=lambda: RemotePRM(backend.url)) as (_, sdk, _):
        backend.seen.clear()  # the front's start-up (/v1/models)
        await asyncio.gather(*(sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": q}], extra_body={"search": BEAM})
            for q in questions))


async def test_every_call_of_a_search_carries_one_key_in_the_header_and_the_chat_body():
    with recording_backend(backend_app()) as backend:
        await run_searches(backend, ["q"])
    seen = [r for r in backend.seen if r.path in SEARCH_PATHS]
    assert {r.path for r in seen} >= {"/tokenize", "/v1/completions", "/v1/rewards"}
    assert len(seen) == len(backend.seen)  # nothing else was asked
    keys = {r.headers.get(DEFAULT_SESSION_HEADER) for r in seen}
    assert len(keys) == 1 and None not in keys
    [key] = keys
    chat_shaped = [r for r in seen if r.body and "messages" in r.body]
    assert chat_shaped and all(r.body["session_params"] == {"session_id": key} for r in chat_shaped)


async def test_concurrent_searches_get_distinct_keys_and_prm_requests_never_mix_them():
    questions = [f"question {i}" for i in range(4)]
    with recording_backend(backend_app()) as backend:
        await run_searches(backend, questions)
    key_of = {}
    for question in questions:
        # the PRM's requests and the prompt's, told apart by the question they carry
        keys = {r.headers.get(DEFAULT_SESSION_HEADER) for r in backend.seen
                if question in str(r.body)}
        assert len(keys) == 1 and None not in keys, (question, keys)
        key_of[question] = keys.pop()
    assert len(set(key_of.values())) == len(questions)
    rewards = [r for r in backend.seen if r.path == "/v1/rewards"]
    assert len(rewards) == 3 * len(questions)  # one PRM request per search and round (max_steps)
    generation_keys = {r.headers.get(DEFAULT_SESSION_HEADER) for r in backend.seen if r.path == "/v1/completions"}
    assert generation_keys == set(key_of.values())


async def test_the_header_name_is_the_servers_setting_and_plain_chat_carries_none():
    settings = ServerSettings(session_header="x-gateway-session")
    with recording_backend(backend_app()) as backend:
        await run_searches(backend, ["q"], settings)
        searched = list(backend.seen)
        front = OpenAIEngine(backend.url)
        async with serving(front, settings) as (_, sdk, _):
            backend.seen.clear()
            await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert all("x-gateway-session" in r.headers and DEFAULT_SESSION_HEADER not in r.headers for r in searched)
    assert backend.seen and not any("x-gateway-session" in r.headers for r in backend.seen)


class SessionRecordingPRM(FakePRM):
    """A PRM on another server, as far as the batcher can tell: notes the session each batch runs in."""

    session_affine = True

    def __init__(self):
        super().__init__()
        self.sessions: list[SearchSession | None] = []

    def score_batch(self, pairs):
        self.sessions.append(current_session())
        return super().score_batch(pairs)


async def score_in(batcher: MicroBatchingScorer, session: SearchSession, question: str):
    with in_session(session):
        return await batcher.score(question, [["good"], ["bad"]])


async def test_a_remote_prm_gets_one_batch_per_search_sent_in_that_search():
    sessions = [SearchSession(f"key-{i}") for i in range(3)]
    prm = SessionRecordingPRM()
    batcher = MicroBatchingScorer(prm, micro_batch_size=64, max_wait_ms=20)
    calls = [score_in(batcher, sessions[i % 3], f"q{i}") for i in range(9)]
    results = await asyncio.gather(*calls)
    await batcher.close()
    assert all(r == [[1.0], [0.0]] for r in results)
    assert sorted(prm.sessions, key=lambda s: s.key) == sessions  # three batches, one per search
    assert prm.batches == [6, 6, 6]  # each search's three calls together


async def test_an_in_process_prm_still_batches_across_searches():
    prm = FakePRM()
    batcher = MicroBatchingScorer(prm, micro_batch_size=64, max_wait_ms=20)
    results = await asyncio.gather(*(score_in(batcher, SearchSession(f"key-{i}"), "q") for i in range(8)))
    await batcher.close()
    assert all(r == [[1.0], [0.0]] for r in results)
    assert sum(prm.batches) == 16 and len(prm.batches) <= 2


def test_pooling_prm_requests_carry_the_session_from_its_worker_threads():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [{"index": 0, "data": [[0.5, 0.5]]}]})

    prm = VLLMPoolingPRM("http://vllm.test", model="prm")
    prm.client = httpx.Client(transport=httpx.MockTransport(handler))
    with in_session(SearchSession("abc", "x-route-key")):
        prm.score_batch([("q", ["a"]), ("q", ["b"]), ("q", ["c"])])
    assert len(seen) == 3
    assert all(r.headers.get("x-route-key") == "abc" for r in seen)
    assert all(b'"session_params":{"session_id":"abc"}' in r.content.replace(b" ", b"") for r in seen)
