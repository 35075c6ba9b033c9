"""End to end through a real router: `openr serve --engine openai` fronts on vLLM's
router (vllm-router, from PyPI), which fronts two replicas (`openr serve --engine hf`,
each generating and scoring steps on /v1/rewards). With consistent_hash every call
of a search lands on one replica, as the replicas' own counters show; concurrent
searches reach both; round-robin splits one search's calls between them. Two
fronts pass every SDK check of the single server, a seed gives the same sample
on either replica, and a client's disconnect at a front frees the replica."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

import openr
from openr.server.launcher import RouterProcess
from tests.e2e.test_e2e_serve import (  # the single server's SDK checks, run here against each front  # noqa: F401
    MODEL,
    QUESTION,
    test_api_key_is_required_on_v1_only,
    test_bad_input_raises_the_matching_sdk_exception,
    test_chat_completion,
    test_disconnect_mid_search_cancels_it,
    test_json_output_on_vllm_and_a_clear_400_elsewhere,
    test_logprobs_through_the_sdk_match_streamed_and_rank_the_greedy_token_first,
    test_malformed_requests_are_400,
    test_max_tokens_respected,
    test_metrics_count_exactly,
    test_models_endpoint,
    test_n_2_returns_two_choices,
    test_non_streaming_disconnect_frees_the_engine,
    test_penalties_and_logit_bias_change_the_greedy_answer,
    test_request_id_header,
    test_seeded_sampling_is_reproducible_or_says_why_not,
    test_stop_string_is_honoured,
    test_streamed_deltas_join_to_the_non_streamed_text,
    test_streaming_disconnect_frees_the_engine,
    test_temperature_zero_determinism,
)
from tests.support.e2e_helpers import hold_stream_then_drop, metric, wait_for_metric
from tests.support.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.e2e
PRM = Path(openr.__file__).parent / "models" / "openr-arith" / "prm"
# Short steps and two rounds: the routing, not the answers, is under test.
SEARCH = {"strategy": "beam_search", "n": 2, "beam_width": 1, "max_steps": 2, "max_step_tokens": 8}
# One search of many calls: three rounds of four samples, each round's scored in a
# PRM batch, on fronts whose steps are words (a step cut at max_step_tokens ends its
# beam, and this model's paragraphs are longer than a step should be here).
MULTI_CALL_SEARCH = {"strategy": "beam_search", "n": 4, "beam_width": 2, "max_steps": 3, "max_step_tokens": 8}
WORD_STEPS = ["--step-separator", " "]
# Round-robin alternates replicas request by request, so each gets about half of
# a search's samples; the test holds each to at least this share.
ROUND_ROBIN_LEAST_SHARE = 1 / 3
STORY = [{"role": "user", "content": "Tell me a long story."}]
SEED_TRIES = 6  # seeded requests sent through round-robin until both replicas have answered one
AFFINITY_SEARCHES = 3
CONCURRENT_SEARCHES = 16
# What a replica counts that a front's search makes it do: samples answered, PRM batches run.
WORK = ("openr:request_success_total", "openr:prm_batch_size_count")


def start_together(*servers):
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda server: server.start(), servers))
    return servers


@pytest.fixture(scope="module")
def pool():
    """Two replicas, a consistent_hash router and a round_robin router on them, two
    fronts on the first and one on the second, and one on each whose steps are
    words; each front's PRM is the replicas' too."""
    replica_args = ["--engine", "hf", "--model", MODEL, "--max-model-len", "2048", "--prm", str(PRM)]
    replicas = [ServerProcess(replica_args, api_key=None) for _ in range(2)]
    routers, fronts = [], []
    try:
        start_together(*replicas)
        urls = [r.url for r in replicas]
        routers = [RouterProcess(urls, "consistent_hash"), RouterProcess(urls, "round_robin")]
        start_together(*routers)
        fronts = [ServerProcess(["--engine", "openai", "--model", router.base_url, "--prm", router.url, *extra])
                  for router, extra in ((routers[0], []), (routers[0], []), (routers[1], []),
                                        (routers[0], WORD_STEPS), (routers[1], WORD_STEPS))]
        start_together(*fronts)
        yield {"replicas": replicas, "hashed": fronts[:2], "round_robin": fronts[2],
               "word_steps": {"affinity": fronts[3], "round_robin": fronts[4]}}
    finally:
        for server in [*fronts, *routers, *replicas]:
            server.stop()


@pytest.fixture(scope="module", params=[0, 1], ids=["front-a", "front-b"])
def server(request, pool):
    return pool["hashed"][request.param]


@pytest.fixture
def client(server):
    return sdk(server)


def sdk(front) -> openai.OpenAI:
    return openai.OpenAI(base_url=front.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def work(replicas) -> list[tuple[float, ...]]:
    return [tuple(metric(r.url, name) for name in WORK) for r in replicas]


def work_done(before, after) -> list[tuple[float, ...]]:
    return [tuple(b - a for a, b in zip(x, y)) for x, y in zip(before, after)]


def search(front, question: str, seed: int = 0):
    return sdk(front).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}],
        extra_body={"search": {**SEARCH, "seed": seed}})


def test_with_affinity_every_call_of_a_search_lands_on_one_replica(pool):
    replicas = pool["replicas"]
    for i in range(AFFINITY_SEARCHES):
        before = work(replicas)
        search(pool["hashed"][i % 2], f"What is {i} + 7?", seed=i)
        done = work_done(before, work(replicas))
        busy = [d for d in done if any(d)]
        assert len(busy) == 1, done  # the other replica did nothing for this search
        assert all(n > 0 for n in busy[0]), done  # its samples and its PRM batches


def test_concurrent_searches_reach_both_replicas(pool):
    replicas = pool["replicas"]
    before = work(replicas)
    fronts = pool["hashed"]
    with ThreadPoolExecutor(CONCURRENT_SEARCHES) as threads:
        answers = list(threads.map(lambda i: search(fronts[i % 2], f"What is {i} * 3?", seed=i),
                                   range(CONCURRENT_SEARCHES)))
    assert all(a.choices[0].message.content is not None for a in answers)
    done = work_done(before, work(replicas))
    assert all(d[0] > 0 for d in done), done


def test_one_search_of_many_calls_all_on_one_replica_with_affinity_and_split_with_round_robin(pool):
    """The same search through each router. The share is a replica's part of the
    search's samples (its own openr:request_success_total); PRM batches likewise."""
    replicas, shares = pool["replicas"], {}
    for name, front in pool["word_steps"].items():
        before = work(replicas)
        sdk(front).chat.completions.create(model=MODEL, messages=STORY,
                                           extra_body={"search": {**MULTI_CALL_SEARCH, "seed": 3}})
        done = work_done(before, work(replicas))
        samples, batches = [d[0] for d in done], [d[1] for d in done]
        assert sum(samples) >= 2 * MULTI_CALL_SEARCH["n"] and sum(batches) >= 2, done  # several rounds each
        shares[name] = [n / sum(samples) for n in samples], samples, batches
    print("one search: each replica's share of its samples, its samples and its PRM batches:", shares)
    assert sorted(shares["affinity"][0]) == [0.0, 1.0], shares  # every sample on one replica
    assert 0 in shares["affinity"][2], shares  # and every PRM batch
    assert all(share >= ROUND_ROBIN_LEAST_SHARE for share in shares["round_robin"][0]), shares  # split over both


def test_a_seed_gives_the_same_sample_on_either_replica(pool):
    """A plain request carries no session key, so two seeded requests through a
    front may reach different replicas: the hf engine seeds each request's
    sampling, and the replicas hold the same weights, so the sample is the same,
    asked of each replica directly or through round-robin until both answered."""
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=8, temperature=1.0, seed=11)
    replicas = pool["replicas"]
    direct = [openai.OpenAI(base_url=r.base_url, api_key="none", max_retries=0, timeout=300)
              .chat.completions.create(**kwargs).choices[0].message.content for r in replicas]
    fronted, served = [], [0, 0]
    for _ in range(SEED_TRIES):
        before = work(replicas)
        fronted.append(sdk(pool["round_robin"]).chat.completions.create(**kwargs).choices[0].message.content)
        served = [n + d[0] for n, d in zip(served, work_done(before, work(replicas)))]
        if all(served):
            break
    assert all(served), served  # each replica sampled at least one of them
    assert set(fronted) == {direct[0]} and direct[0] == direct[1], (direct, fronted)


def test_a_disconnect_at_the_front_frees_the_replica_behind_the_router(pool):
    front, replicas = pool["hashed"][0], pool["replicas"]
    running, sequences = hold_stream_then_drop(front.url, MODEL, {"Authorization": f"Bearer {API_KEY}"})
    assert (running, sequences) == (1, 1)  # the front was streaming from a replica through the router
    for replica in replicas:
        assert wait_for_metric(replica.url, "openr:engine_sequences_running", 0) == 0
