"""End to end through `--engine openai`: a front `openr serve` generating on a
second `openr serve` over loopback, the scale-out path."""

from __future__ import annotations

import openai
import pytest

from tests.support.e2e_helpers import hold_stream_then_drop, wait_for_metric
from tests.support.servers import API_KEY, ServerProcess

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name three colours."}]
BACKEND_CONTEXT = 2048
STEP_TOKENS = 512  # a search step's max_tokens (the default max_step_tokens)
LONG_QUESTION_WORDS = 1900  # leaves the backend's context fewer than STEP_TOKENS tokens
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def servers():
    with ServerProcess(["--engine", "hf", "--model", MODEL, "--max-model-len", str(BACKEND_CONTEXT)]) as backend:
        front_args = ["--engine", "openai", "--model", backend.base_url, "--remote-api-key", API_KEY]
        with ServerProcess(front_args) as front:
            yield backend, front


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def test_front_serves_the_backend_model_with_the_same_greedy_text(servers):
    backend, front = servers
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    direct = sdk(backend).chat.completions.create(**kwargs)
    remote = sdk(front).chat.completions.create(**kwargs)
    assert [m.id for m in sdk(front).models.list().data] == [MODEL]
    assert remote.choices[0].message.content == direct.choices[0].message.content
    assert remote.usage.prompt_tokens == direct.usage.prompt_tokens
    assert remote.usage.completion_tokens == direct.usage.completion_tokens


def test_front_streams_and_honours_n(servers):
    _, front = servers
    chunks = list(sdk(front).chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, n=2,
                                                     temperature=0.8, seed=3, stream=True))
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in (0, 1)]
    assert all(texts)


def test_front_knows_the_backend_context_length(servers):
    _, front = servers
    with pytest.raises(openai.BadRequestError) as err:
        sdk(front).chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4000)
    assert err.value.body["param"] == "max_tokens"


def test_disconnect_at_the_front_frees_the_backend(servers):
    backend, front = servers
    headers = {"Authorization": f"Bearer {API_KEY}"}
    running, sequences = hold_stream_then_drop(front.url, MODEL, headers)
    assert (running, sequences) == (1, 1)
    assert wait_for_metric(backend.url, "openr:engine_sequences_running", 0) == 0
    assert wait_for_metric(front.url, "openr:num_requests_running", 0) == 0
    assert sdk(front).chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3).choices


def test_a_search_step_is_kept_inside_the_backend_context(servers):
    """A question that leaves the backend's context less room than a step's
    max_step_tokens: the front cuts each sample to that room instead of sending
    a max_tokens the backend refuses."""
    backend, front = servers
    question = [{"role": "user", "content": "Say the next word: " + "apple " * LONG_QUESTION_WORDS}]
    probe = sdk(backend).chat.completions.create(model=MODEL, messages=question, max_tokens=1)
    room = BACKEND_CONTEXT - probe.usage.prompt_tokens
    assert 0 < room < STEP_TOKENS
    search = {"strategy": "majority_vote", "n": 2, "max_steps": 1, "max_step_tokens": STEP_TOKENS}
    answer = sdk(front).chat.completions.create(model=MODEL, messages=question, extra_body={"search": search})
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert 0 < answer.usage.completion_tokens_details.reasoning_tokens <= 2 * room
