"""End to end on the committed `openr-arith` bundle, the default model: `openr serve`
with no `--model` serves the policy with its PRM attached, every search strategy
answers through the OpenAI SDK with usage and traces, and /v1/rewards scores with
the committed PRM. The policy must really solve short problems, so a broken or
badly trained policy fails here."""

from __future__ import annotations

import asyncio
import random

import httpx
import openai
import pytest

from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, DEFAULT_MODEL, PRM_SUBDIR
from openr.prm import load_prm
from openr.tasks import arith
from openr.tasks.grading import is_correct
from openr.tasks.problem import split_steps
from tests.support.e2e_helpers import dashboard_metrics, metric, metric_families, wait_for_metric
from tests.support.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.e2e
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
# Held-out problems with two or three operations: the committed policy solves
# nearly all of them greedily (its accuracy falls with the number of steps).
EASY = [p for p in arith.test_split() if p.level <= 3][:8]


def first_at_level(level: int):
    return next(p for p in arith.test_split() if p.level == level)


@pytest.fixture(scope="module")
def server():
    assert DEFAULT_MODEL == ARITH_ALIAS
    with ServerProcess(["--engine", "hf"]) as server:  # no --model: the default
        yield server


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def ask(client, problem, **kwargs):
    return client.chat.completions.create(model=ARITH_ALIAS, messages=[{"role": "user", "content": problem.question}],
                                          **kwargs)


def test_default_model_is_openr_arith_with_its_prm(client):
    model = client.models.list().data[0]
    assert model.id == ARITH_ALIAS and model.model_extra["prm"] == f"{ARITH_ALIAS}-prm"


def test_greedy_policy_solves_short_problems(client):
    replies = [ask(client, p, temperature=0, max_tokens=200).choices[0].message.content for p in EASY]
    solved = sum(is_correct(reply, p.answer) for reply, p in zip(replies, EASY))
    assert solved >= len(EASY) - 1, replies


def test_rewards_endpoint_scores_with_the_committed_prm(server):
    """/v1/rewards gives, per step, exactly what the committed PRM checkpoint
    scores offline. (How good those scores are is the recipe's PRM report.)"""
    rng = random.Random(0)
    problem = first_at_level(4)
    candidates = [split_steps(problem.solution), split_steps(arith.corrupt_step(problem.solution, 1, rng))]
    expected = load_prm(BUILTIN_BUNDLES[ARITH_ALIAS] / PRM_SUBDIR).score_batch(
        [(problem.question, steps) for steps in candidates])
    response = httpx.post(f"{server.base_url}/rewards", headers=HEADERS, timeout=60,
                          json={"question": problem.question, "candidates": candidates})
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert [len(s) for s in scores] == [len(c) for c in candidates]
    assert all(0 < x < 1 for steps in scores for x in steps)
    flat = [x for steps in scores for x in steps]
    assert flat == pytest.approx([x for steps in expected for x in steps], abs=1e-5)




def test_a_candidate_too_long_for_the_prm_is_400_and_spares_concurrent_calls(server):
    problem = first_at_level(3)
    good = {"question": problem.question, "candidates": [split_steps(problem.solution)]}
    too_long = {"question": problem.question, "candidates": [["1 + 2 = 3 " * 200]]}

    async def post_all():
        async with httpx.AsyncClient(base_url=server.base_url, headers=HEADERS, timeout=60) as client:
            # sent together, so the micro-batcher puts them in one batch
            return await asyncio.gather(*(client.post("/rewards", json=body) for body in (good, too_long, good)))

    first, bad, last = asyncio.run(post_all())
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert (error["param"], error["code"]) == ("candidates", "context_length_exceeded")
    assert "768" in error["message"]
    for response in (first, last):
        assert response.status_code == 200, response.text
        assert len(response.json()["scores"][0]) == len(good["candidates"][0])

def test_committed_prm_finds_the_first_wrong_step(server):
    """The committed PRM passes every gold step and fails a step given a wrong
    result, and every step after it, at each position of problems of 2 to 6 operations."""
    rng = random.Random(1)
    for level in range(2, 7):
        problem = first_at_level(level)
        candidates = [split_steps(problem.solution)]
        candidates += [split_steps(arith.corrupt_step(problem.solution, k, rng)) for k in range(level)]
        response = httpx.post(f"{server.base_url}/rewards", headers=HEADERS, timeout=60,
                              json={"question": problem.question, "candidates": candidates})
        assert response.status_code == 200, response.text
        gold, *corrupted = response.json()["scores"]
        assert min(gold) > 0.5, (problem.question, gold)
        for k, scores in enumerate(corrupted):
            judged = [score > 0.5 for score in scores]
            assert judged == [True] * k + [False] * (len(scores) - k), (problem.question, candidates[k + 1], scores)

SEARCHES = {
    "cot": {},
    "majority_vote": {"n": 4},
    "best_of_n": {"n": 4, "aggregation": "prm_min_max"},
    "beam_search": {"n": 4, "beam_width": 2, "aggregation": "prm_last_max"},
    "dvts": {"n": 4, "beam_width": 2},
    "mcts": {"n_children": 2, "num_simulations": 4},
}


@pytest.mark.parametrize("strategy", sorted(SEARCHES))
def test_every_strategy_answers_with_usage_and_trace(client, strategy):
    problem = EASY[0]
    search = {"strategy": strategy, **SEARCHES[strategy], "seed": 3, "return_trace": True}
    r = ask(client, problem, extra_body={"search": search})
    trace = r.model_extra["search_trace"]
    assert trace["strategy"] == strategy and trace["candidates"]
    assert r.usage.completion_tokens == trace["tokens_generated"] > 0
    answer_tokens = r.usage.completion_tokens - r.usage.completion_tokens_details.reasoning_tokens
    assert 0 < answer_tokens <= r.usage.completion_tokens
    assert r.choices[0].finish_reason == "stop"
    content = r.choices[0].message.content
    if strategy in ("cot", "majority_vote"):
        assert is_correct(content, problem.answer), content
    else:
        # The PRM picks: the answer returned is the best-scored finished candidate's.
        assert trace["prm_calls"] > 0
        scored = [c for c in trace["candidates"] if c["step_scores"]]
        assert scored and all(len(c["step_scores"]) == len(c["steps"]) for c in scored)
        best = max((c for c in trace["candidates"] if c["finished"]), key=lambda c: c["aggregate_score"])
        assert is_correct(content, best["answer"]), (content, best)


def test_n_returns_distinct_answers_and_streams(client):
    problem = first_at_level(8)
    search = {"strategy": "best_of_n", "n": 8, "temperature": 1.0, "seed": 1}
    r = ask(client, problem, n=2, extra_body={"search": search})
    assert len(r.choices) == 2 and r.choices[0].message.content != r.choices[1].message.content
    chunks = list(ask(client, problem, stream=True, extra_body={"search": search}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") and "\\boxed{" in text


def test_budget_stops_a_search_with_length(client):
    problem = first_at_level(8)
    search = {"strategy": "beam_search", "n": 8, "beam_width": 2, "seed": 2, "return_trace": True}
    full = ask(client, problem, extra_body={"search": search})
    capped = ask(client, problem, extra_body={"search": {**search, "max_tokens_total": 60}})
    # One round of 8 candidate steps (each at most ~30 tokens here) may overrun the budget, no more.
    round_max = 8 * 30
    assert full.choices[0].finish_reason == "stop" and full.usage.completion_tokens > 60 + round_max
    assert capped.choices[0].finish_reason == "length"
    assert 0 < capped.usage.completion_tokens <= 60 + round_max


def test_prm_prefix_cache_serves_what_a_beam_search_sends_again(server, client):
    """Every call of a beam search re-sends its question and kept steps; the PRM's
    prefix cache serves those, and /metrics counts it as vLLM counts its own."""
    queries, hits = "openr:prm_prefix_cache_queries_total", "openr:prm_prefix_cache_hits_total"
    before = metric(server.url, queries), metric(server.url, hits)
    search = {"strategy": "beam_search", "n": 8, "beam_width": 2, "seed": 4, "return_trace": True}
    r = ask(client, first_at_level(6), extra_body={"search": search})
    assert r.model_extra["search_trace"]["prm_calls"] >= 3
    asked, served = metric(server.url, queries) - before[0], metric(server.url, hits) - before[1]
    assert asked > 0 and 0.5 * asked < served < asked



def test_every_metric_the_grafana_dashboard_names_is_on_metrics(server, client):
    """deploy/grafana's dashboard queries only what this server exports (after a
    search has run, so the PRM's and the search's metrics all have samples)."""
    ask(client, first_at_level(2), extra_body={"search": {"strategy": "beam_search", "n": 4, "beam_width": 2}})
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    named = dashboard_metrics()
    assert len(named) >= 10 and not named - metric_families(text)


@pytest.mark.parametrize("search, param", [
    ({"strategy": "beam_search", "n": 4, "beam_width": 3}, "search.n"),
    ({"strategy": "mcts", "c_puct": -1}, "search.c_puct"),
    ({"strategy": "best_of_n", "aggregation": "prm_median"}, "search.aggregation"),
    ({"strategy": "tree_of_thought"}, "search.strategy"),
])
def test_bad_search_options_are_400_naming_the_field(client, search, param):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, EASY[0], extra_body={"search": search})
    assert err.value.body["param"] == param


def test_disconnect_mid_search_cancels_it(server):
    """A streamed MCTS of 64 samples, dropped as soon as its first chunk arrives
    (the search has started and is running): it is cancelled and the engine
    freed. Not after its first progress report: on the hf engine this MCTS can
    now end within the one-second progress interval."""
    problem = first_at_level(8)
    body = {"model": ARITH_ALIAS, "messages": [{"role": "user", "content": problem.question}], "stream": True,
            "search": {"strategy": "mcts", "n_children": 4, "num_simulations": 16, "temperature": 1.0}}
    before = metric(server.url, "openr:search_requests_total", outcome="cancelled")
    with httpx.Client(timeout=120, headers=HEADERS) as http:
        with http.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
            lines = response.iter_lines()  # held: a dropped iterator would close the connection early
            assert next(line for line in lines if line.startswith("data: "))  # the search is running
            assert metric(server.url, "openr:num_requests_running") == 1
            lines.close()
    assert wait_for_metric(server.url, "openr:num_requests_running", 0) == 0
    assert wait_for_metric(server.url, "openr:engine_sequences_running", 0) == 0
    assert metric(server.url, "openr:search_requests_total", outcome="cancelled") == before + 1


@pytest.mark.vllm
def test_vllm_engine_serves_openr_arith_and_searches():
    with ServerProcess(["--engine", "vllm", "--model", ARITH_ALIAS]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)
        problem = EASY[1]
        greedy = ask(client, problem, temperature=0, max_tokens=200)
        assert is_correct(greedy.choices[0].message.content, problem.answer)
        r = ask(client, problem, extra_body={"search": {"strategy": "beam_search", "n": 4, "beam_width": 2,
                                                         "return_trace": True}})
        assert r.model_extra["search_trace"]["prm_calls"] > 0
        assert is_correct(r.choices[0].message.content, problem.answer)
        # the largest budget (issue 27): dvts at n=256, 64 subtrees of width 4, each sampling to the end
        r = ask(client, problem, extra_body={"search": {"strategy": "dvts", "n": 256, "beam_width": 4,
                                                         "return_trace": True}})
        trace = r.model_extra["search_trace"]
        assert len([c for c in trace["candidates"] if c["finished"]]) >= 64
        assert r.usage.completion_tokens == trace["tokens_generated"] >= 256 * 10
        assert is_correct(r.choices[0].message.content, problem.answer)


def test_access_log_is_on_by_default_and_the_vllm_flag_turns_it_off(server, client):
    ask(client, EASY[0], max_tokens=4, temperature=0)
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in server.output()
    with ServerProcess(["--engine", "hf", "--disable-uvicorn-access-log"]) as quiet:
        quiet_client = openai.OpenAI(base_url=quiet.base_url, api_key=API_KEY, max_retries=0, timeout=300)
        assert ask(quiet_client, EASY[0], max_tokens=4, temperature=0).usage.completion_tokens == 4
        log = quiet.output()
    assert "POST /v1/chat/completions" not in log and "ready" in log  # the server logged, just not each request
