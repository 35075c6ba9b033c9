"""vLLM's `ignore_eos` is honoured (sampling runs past the end-of-text token, to
max_tokens) on every engine and passed on by a front; with a search it is a
400. The fields vllm-router writes into every body at their defaults ask for
nothing, so a replica behind it does not log them as ignored."""

from __future__ import annotations

import logging

import pytest

from openr.engine.base import SamplingConfig
from openr.engine.checkpoints import split_bundle
from openr.engine.hf_engine import HFEngine
from openr.server.protocol import ROUTER_DEFAULTS
from tests.app.test_api_hostile import error_of, post_to
from tests.app.test_app import chat
from tests.app.test_front_logprobs import front_on
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import FakeEngine, FakePRM, StepFakeEngine

pytestmark = pytest.mark.anyio
IGNORED = "ignoring unsupported request fields"


async def test_ignore_eos_reaches_the_engine_on_chat_and_completions():
    async with serving() as (http, _, engine):
        assert (await post_to(http, "/v1/chat/completions", chat(max_tokens=2, ignore_eos=True))).status_code == 200
        completion = {"model": MODEL, "prompt": "go", "max_tokens": 2}
        assert (await post_to(http, "/v1/completions", {**completion, "ignore_eos": True})).status_code == 200
        assert (await post_to(http, "/v1/completions", completion)).status_code == 200
    assert [p.ignore_eos for p in engine.params] == [True, True, False]


async def test_a_front_passes_ignore_eos_on_only_when_asked():
    async with front_on(FakeEngine()) as (http, _, backend):
        for ignore_eos in (True, False):
            body = chat(max_tokens=2, ignore_eos=ignore_eos)
            assert (await post_to(http, "/v1/chat/completions", body)).status_code == 200
        sent = [r.body for r in backend.seen if r.path == "/v1/completions"]
    assert [body.get("ignore_eos") for body in sent] == [True, None]


async def test_ignore_eos_with_a_search_is_a_400():
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (http, _, engine):
        body = chat(max_tokens=64, ignore_eos=True, search={"strategy": "best_of_n", "n": 2})
        assert error_of(await post_to(http, "/v1/chat/completions", body))["param"] == "ignore_eos"
        assert engine.params == []


async def test_the_fields_a_router_adds_at_their_defaults_are_not_logged(caplog):
    caplog.set_level(logging.WARNING, logger="openr.server.app")
    async with serving() as (http, _, _):
        completion = {"model": MODEL, "prompt": "go", "max_tokens": 2, "ignore_eos": False, "echo": False,
                      "skip_special_tokens": True, "no_stop_trim": False, "return_hidden_states": False}
        assert (await post_to(http, "/v1/completions", completion)).status_code == 200
        assert (await post_to(http, "/v1/chat/completions", chat(**ROUTER_DEFAULTS))).status_code == 200
        assert IGNORED not in caplog.text
        assert (await post_to(http, "/v1/completions", {**completion, "no_stop_trim": True})).status_code == 200
    assert f"{IGNORED}: no_stop_trim" in caplog.text  # not at its default: it asked for something


async def test_the_hf_engine_samples_past_its_end_of_text_with_ignore_eos():
    engine = HFEngine(split_bundle("openr-arith")[0])
    await engine.start()
    try:
        prompt = await engine.prepare_chat([{"role": "user", "content": "What is 3 + 4?"}])
        ended = await engine.complete(prompt.text, SamplingConfig(200, temperature=0.0))
        room = ended.num_tokens + 5
        ignored = await engine.complete(prompt.text, SamplingConfig(room, temperature=0.0, ignore_eos=True))
    finally:
        await engine.close()
    assert ended.finish == "eos" and ended.num_tokens < 200
    assert (ignored.finish, ignored.num_tokens) == ("length", room)
    assert ignored.text.startswith(ended.text)
