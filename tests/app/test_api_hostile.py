"""Every standard field honoured or refused, and hostile bodies: the app over
ASGI with a fake engine. Each case is one an independent bad-input check sent;
none may be a 5xx, be accepted silently, or disturb the next request."""

from __future__ import annotations

import json

import httpx
import pytest

from openr.server.settings import ServerSettings
from tests.app.test_app import chat
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import FakeEngine, FakePRM, StepFakeEngine

pytestmark = pytest.mark.anyio


def error_of(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


async def post(http: httpx.AsyncClient, body) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return await http.post("/v1/chat/completions", content=data, headers={"content-type": "application/json"})


REFUSED = [
    # (body overrides, the param the 400 names)
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"presence_penalty": 5}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"logprobs": True, "top_logprobs": 100}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"stream": "yes"}, "stream"),
    ({"n": "2"}, "n"),
    ({"temperature": "hot"}, "temperature"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "",
                                                         "tool_calls": [{"id": "1", "type": "function"}]}]},
     "messages.1.tool_calls"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 150}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"store": True}, "store"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"verbosity": "low"}, "verbosity"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 10_000}, "max_tokens"),  # the prompt fits; prompt + max_tokens does not
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
]


@pytest.mark.parametrize("overrides,param", REFUSED, ids=[p for _, p in REFUSED])
async def test_a_field_that_cannot_be_honoured_is_a_400_naming_it(overrides, param):
    async with serving() as (http, _, engine):
        error = error_of(await post(http, chat(**overrides)))
        assert error["param"] == param, error
        assert error["type"] == "invalid_request_error"
        assert engine.params == []  # refused before anything was sampled
        assert (await post(http, chat())).status_code == 200  # and the server is fine


async def test_context_overflow_names_its_code():
    async with serving() as (http, _, _):
        error = error_of(await post(http, chat(max_completion_tokens=10_000)))
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_completion_tokens"


@pytest.mark.parametrize("overrides,param,engine_kw", [
    ({"logprobs": True}, "logprobs", {"features": frozenset()}),
    ({"presence_penalty": 0.5}, "presence_penalty", {"features": frozenset()}),
    ({"logit_bias": {"3": 5}}, "logit_bias", {"features": frozenset()}),
    ({"logit_bias": {"7": 5}}, "logit_bias", {"features": frozenset({"logit_bias"}), "vocab_size": 7}),
    ({"response_format": {"type": "json_object"}}, "response_format", {}),
])
async def test_what_the_engine_cannot_do_is_refused(overrides, param, engine_kw):
    async with serving(FakeEngine(**engine_kw)) as (http, _, engine):
        error = error_of(await post(http, chat(**overrides)))
        assert error["param"] == param, error
        assert engine.params == []


async def test_what_the_engine_can_do_reaches_it():
    engine = FakeEngine(features=frozenset({"penalties", "logit_bias", "json_output"}), vocab_size=8)
    async with serving(engine) as (http, _, _):
        body = chat(presence_penalty=0.5, frequency_penalty=-0.25, logit_bias={"7": -100, "2": 3},
                    response_format={"type": "json_schema",
                                     "json_schema": {"name": "a", "schema": {"type": "object"}}})
        assert (await post(http, body)).status_code == 200
        assert (await post(http, chat(response_format={"type": "json_object"}))).status_code == 200
    first, second = engine.params
    assert (first.presence_penalty, first.frequency_penalty) == (0.5, -0.25)
    assert first.logit_bias == ((2, 3.0), (7, -100.0))
    assert json.loads(first.json_schema) == {"type": "object"} and not first.json_object
    assert second.json_object and second.json_schema is None


async def test_hints_and_unknown_fields_are_accepted():
    async with serving() as (http, _, _):
        body = chat(user="u1", metadata={"k": "v"}, store=False, service_tier="auto", prompt_cache_key="c",
                    safety_identifier="s", parallel_tool_calls=False, tool_choice="none", modalities=["text"],
                    response_format={"type": "text"}, some_vendor_field={"x": 1})
        assert (await post(http, body)).status_code == 200


async def test_logprobs_follow_openai_shape_and_match_when_streamed():
    async with serving() as (http, sdk, _):
        whole = await sdk.chat.completions.create(**chat(max_tokens=3, logprobs=True, top_logprobs=2))
        stream = await sdk.chat.completions.create(**chat(max_tokens=3, logprobs=True, top_logprobs=2, stream=True))
        streamed = [t async for c in stream for choice in c.choices if choice.logprobs
                    for t in choice.logprobs.content]
        plain = await sdk.chat.completions.create(**chat(max_tokens=3))
    content = whole.choices[0].logprobs.content
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    assert [t.logprob for t in content] == [-0.5] * 3
    assert [[a.token for a in t.top_logprobs] for t in content] == [[" beta", " gamma"], [" gamma", " delta"],
                                                                     [" delta", " epsilon"]]
    assert content[1].bytes == list(b" beta")
    assert [t.model_dump() for t in streamed] == [t.model_dump() for t in content]
    assert plain.choices[0].logprobs is None


async def test_deep_nesting_is_a_400_and_the_next_request_on_the_connection_is_served():
    async with serving() as (http, _, _):
        deep = '{"model": "%s", "messages": [], "x": %s%s}' % (MODEL, "[" * 100_000, "]" * 100_000)
        assert error_of(await post(http, deep))["code"] == "invalid_json"
        deep_search = json.dumps(chat())[:-1] + ', "search": ' + "{\"a\": " * 50_000 + "1" + "}" * 50_000 + "}"
        assert error_of(await post(http, deep_search))["code"] == "invalid_json"
        assert (await post(http, chat())).status_code == 200


@pytest.mark.parametrize("body", [b"\xff\xfe", b"[1, 2]", b'"text"', b"{", b"", b"null"])
async def test_bodies_that_are_not_a_json_object_are_400s(body):
    async with serving() as (http, _, _):
        assert error_of(await post(http, body))["code"] == "invalid_json"


async def test_bodies_over_the_limit_are_413s_whether_or_not_they_declare_a_length():
    async with serving(settings=ServerSettings(max_request_bytes=2_000)) as (http, _, _):
        big = chat(messages=[{"role": "user", "content": "x" * 5_000}])
        assert error_of(await post(http, big), 413)["code"] == "request_too_large"

        async def chunks():
            for _ in range(10):
                yield b" " * 500

        response = await http.post("/v1/chat/completions", content=chunks(),
                                   headers={"content-type": "application/json"})
        assert error_of(response, 413)["code"] == "request_too_large"
        assert (await post(http, chat())).status_code == 200


async def test_huge_arrays_and_strings_are_refused_cleanly():
    async with serving() as (http, _, _):
        many = chat(messages=[{"role": "user", "content": "hi there"}] * 50_000)
        assert error_of(await post(http, many))["code"] == "context_length_exceeded"
        long = chat(messages=[{"role": "user", "content": "word " * 500_000}])
        assert error_of(await post(http, long))["code"] == "context_length_exceeded"


async def test_search_takes_top_level_sampling_knobs_and_refuses_per_sample_ones():
    engine = StepFakeEngine()
    async with serving(engine, prm_factory=FakePRM) as (http, _, _):
        body = chat(max_tokens=64, temperature=0.3, top_p=0.9, seed=5, search={"strategy": "best_of_n", "n": 2})
        assert (await post(http, body)).status_code == 200
        assert {(p.temperature, p.top_p) for p in engine.params} == {(0.3, 0.9)}
        assert sorted(p.seed for p in engine.params) == [5, 6]
        engine.params.clear()
        body = chat(max_tokens=64, temperature=0.3, search={"strategy": "best_of_n", "n": 2, "temperature": 0.7})
        assert (await post(http, body)).status_code == 200
        assert {p.temperature for p in engine.params} == {0.7}  # search.temperature wins
        for field, value in (("logprobs", True), ("stop", ["x"]), ("presence_penalty", 1.0),
                             ("logit_bias", {"1": 2}), ("response_format", {"type": "json_object"})):
            error = error_of(await post(http, chat(reasoning_effort="low", **{field: value})))
            assert error["param"] == field, error


async def post_to(http: httpx.AsyncClient, path: str, body) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return await http.post(path, content=data, headers={"content-type": "application/json"})


COMPLETION_REFUSED = [
    ({"prompt": ""}, "prompt"),  # no tokens: nothing to generate from
    ({"prompt": "a b", "echo": True}, "echo"),
    ({"prompt": "a b", "suffix": "c"}, "suffix"),
    ({"prompt": "a b", "best_of": 3}, "best_of"),
    ({"prompt": "a b", "best_of": 0}, "best_of"),
    ({"prompt": "a b", "echo": "yes"}, "echo"),
]


@pytest.mark.parametrize("overrides,param", COMPLETION_REFUSED, ids=[str(o) for o, _ in COMPLETION_REFUSED])
async def test_completion_fields_that_cannot_be_honoured_are_400s(overrides, param):
    async with serving() as (http, _, engine):
        error = error_of(await post_to(http, "/v1/completions", {"model": MODEL, "max_tokens": 2, **overrides}))
        assert error["param"] == param, error
        assert engine.params == []  # refused before anything was generated
        fine = {"model": MODEL, "prompt": "a b", "max_tokens": 2, "n": 2, "best_of": 2, "echo": False, "suffix": None}
        assert len((await post_to(http, "/v1/completions", fine)).json()["choices"]) == 2


@pytest.mark.parametrize("tokens,bad", [([-1], 0), ([3, 2**40], 1), ([2**70], 0), ([5, 99], 1)])
async def test_detokenize_refuses_ids_outside_the_vocabulary(tokens, bad):
    async with serving(FakeEngine(vocab_size=50)) as (http, _, _):
        error = error_of(await post_to(http, "/detokenize", {"model": MODEL, "tokens": tokens}))
        assert error["param"] == f"tokens.{bad}" and "outside the vocabulary" in error["message"]
        assert (await post_to(http, "/detokenize", {"tokens": [0, 49]})).json() == {"prompt": "x x"}


@pytest.mark.parametrize("option", ["timeout_s", "temperature", "top_p", "confidence"])
@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
async def test_search_numbers_that_are_not_finite_are_400s(option, value):
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (http, _, _):
        search = {"strategy": "best_of_n", "n": 2, "adaptive": True} if option == "confidence" else \
            {"strategy": "best_of_n", "n": 2}
        body = json.dumps(chat(search=search))[:-2] + f', "{option}": '.encode().decode() + value.decode() + "}}"
        error = error_of(await post(http, body))
        assert error["param"] == f"search.{option}", error


async def test_an_unexpected_failure_is_a_json_500_and_the_app_goes_on():
    class Failing(FakeEngine):
        async def deltas(self, prompt, params):
            if "fail" in prompt:
                raise RuntimeError("boom")
            async for delta in super().deltas(prompt, params):
                yield delta

    async with serving(Failing()) as (http, _, _):  # the ASGI transport re-raises whatever the app raises
        error = error_of(await post(http, chat(messages=[{"role": "user", "content": "fail"}])), 500)
        assert error["type"] == "server_error" and "boom" in error["message"]
        assert (await post(http, chat())).status_code == 200


@pytest.mark.parametrize("search", [{"strategy": "best_of_n", "n": 2}, {"strategy": "majority_vote", "n": 2},
                                    {"strategy": "beam_search", "n": 2, "beam_width": 1}])
async def test_a_search_whose_prompt_fills_the_context_is_refused_not_answered_empty(search):
    engine = StepFakeEngine()
    async with serving(engine, prm_factory=FakePRM) as (http, _, _):
        long = [{"role": "user", "content": "word " * engine.max_model_len}]
        error = error_of(await post(http, chat(messages=long, search=search)))
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert engine.params == []  # nothing was sampled


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": "refuse me"}])),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": "refuse me"}], reasoning_effort="low")),
    ("/tokenize", {"messages": [{"role": "user", "content": "refuse me"}]}),
])
async def test_a_chat_templates_refusal_is_a_400_on_every_path(path, body):
    class Picky(StepFakeEngine):
        async def prepare_chat(self, messages):
            if messages[-1]["content"] == "refuse me":
                raise ValueError("Conversation roles must alternate user/assistant")
            return await super().prepare_chat(messages)

    async with serving(Picky(), prm_factory=FakePRM) as (http, _, _):
        error = error_of(await post_to(http, path, body))
        assert error["param"] == "messages" and "roles must alternate" in error["message"]
