"""End to end: DeepConf through the unmodified OpenAI SDK against a real `openr
serve` on the openr-arith policy without its PRM, on hf and on in-process vLLM:
online halting in the engine (the halted samples' tokens in usage and in the
metrics), offline filtering, reasoning_effort falling back to deepconf, streaming."""

from __future__ import annotations

import openai
import pytest

from openr.engine.checkpoints import split_bundle
from openr.tasks import arith
from tests.support.e2e_helpers import metric, wait_for_metric
from tests.support.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.e2e
POLICY = split_bundle("openr-arith")[0]  # the policy alone: no PRM
PROBLEMS = [p for p in arith.test_split() if p.level >= 5][:3]  # hard enough that samples disagree


@pytest.fixture(scope="module", params=["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def server(request):
    with ServerProcess(["--engine", request.param, "--model", POLICY]) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def ask(client, model, problem, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": problem.question}],
                                          **kwargs)


def test_online_deepconf_halts_samples_in_the_engine_and_counts_their_tokens(client, model, server):
    halted = 0
    for i, problem in enumerate(PROBLEMS):
        # keep 50%: the warm-up's median least likely token is the threshold, so about half the later samples
        # meet a less likely one and halt there; a consensus of 1.0 draws all 8 unless the warm-up agrees
        search = {"strategy": "deepconf", "n": 8, "measure": "min_logprob", "keep_percent": 50, "consensus": 1.0,
                  "seed": i, "return_trace": True}
        r = ask(client, model, problem, extra_body={"search": search})
        trace = r.model_extra["search_trace"]
        report = trace["deepconf"]
        assert r.choices[0].message.content and report["samples"] in (4, 8)
        assert r.usage.completion_tokens == trace["tokens_generated"] == sum(s["tokens"]
                                                                             for s in report["per_sample"])
        for sample in report["per_sample"]:
            if sample["ended"] == "halted":  # below the threshold, not a whole solution: it never votes
                assert not sample["votes"] and sample["confidence"] < report["threshold"]
        halted += report["halted"]
    assert halted > 0
    assert metric(server.url, "openr:search_samples_halted_total") == halted


def test_offline_deepconf_votes_with_the_most_confident_share(client, model):
    r = ask(client, model, PROBLEMS[0], extra_body={"search": {"strategy": "deepconf", "mode": "offline", "n": 8,
                                                               "keep_percent": 25, "seed": 0, "return_trace": True}})
    report = r.model_extra["search_trace"]["deepconf"]
    assert [s["ended"] for s in report["per_sample"]].count("filtered") == 6 and report["voting"] == 2
    assert r.usage.completion_tokens == sum(s["tokens"] for s in report["per_sample"])


def test_reasoning_effort_without_a_prm_searches_with_deepconf(client, model):
    r = ask(client, model, PROBLEMS[0], reasoning_effort="low", extra_body={"search": {"return_trace": True}})
    trace = r.model_extra["search_trace"]
    assert trace["strategy"] == "deepconf" and trace["deepconf"]["mode"] == "online"
    assert r.usage.completion_tokens_details.reasoning_tokens > 0


def test_a_streamed_deepconf_search_ends_with_the_answer_and_usage(client, model):
    chunks = list(ask(client, model, PROBLEMS[1], stream=True, stream_options={"include_usage": True},
                      extra_body={"search": {"strategy": "deepconf", "n": 8, "seed": 0}}))
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "\\boxed" in answer and chunks[-1].usage.completion_tokens > 0


def test_a_bad_deepconf_option_is_a_400_naming_it(client, model):
    with pytest.raises(openai.BadRequestError) as error:
        ask(client, model, PROBLEMS[0], extra_body={"search": {"strategy": "deepconf", "measure": "tail"}})
    assert error.value.body["param"] == "search.measure"


@pytest.fixture(scope="module")
def remote():
    """A front on `--engine openai` generating on a backend `openr serve` (hf) over loopback."""
    with ServerProcess(["--engine", "hf", "--model", POLICY]) as backend:
        with ServerProcess(["--engine", "openai", "--model", backend.base_url, "--remote-api-key", API_KEY]) as front:
            yield backend, front


def test_through_a_remote_pool_halting_closes_the_samples_streams_and_frees_the_backend(remote):
    backend, front = remote
    client = openai.OpenAI(base_url=front.base_url, api_key=API_KEY, max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    finished_before = metric(backend.url, "openr:request_success_total")
    halted = samples = 0
    for i, problem in enumerate(PROBLEMS):
        search = {"strategy": "deepconf", "n": 8, "measure": "min_logprob", "keep_percent": 50, "consensus": 1.0,
                  "seed": i, "return_trace": True}
        r = ask(client, model, problem, extra_body={"search": search})
        report = r.model_extra["search_trace"]["deepconf"]
        assert r.usage.completion_tokens == sum(s["tokens"] for s in report["per_sample"])
        halted, samples = halted + report["halted"], samples + report["samples"]
    assert halted > 0 and metric(front.url, "openr:search_samples_halted_total") == halted
    # every halted sample's stream was closed and the backend aborted it: it never finished there, and
    # nothing is left running
    finished = samples - halted + finished_before
    assert wait_for_metric(backend.url, "openr:request_success_total", finished) == finished
    assert wait_for_metric(backend.url, "openr:engine_sequences_running", 0) == 0
