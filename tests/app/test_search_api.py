"""Search behind /v1/chat/completions at the app level (fake engine and PRM):
extra_body options, validation, usage, traces, streaming, metrics, micro-batching."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from openr.prm.batcher import MicroBatchingScorer
from openr.prm.causal_lm import PRMInputTooLong
from openr.search.defaults import SearchDefaults
from openr.server.metrics import metric_in
from openr.server.settings import SearchLimits, ServerSettings
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import FakePRM, StepFakeEngine

pytestmark = pytest.mark.anyio
MESSAGES = [{"role": "user", "content": "q"}]


def search_call(sdk, search: dict | None = None, **kwargs):
    extra = {"search": search} if search is not None else None
    return sdk.chat.completions.create(model=MODEL, messages=MESSAGES, extra_body=extra, **kwargs)


async def test_the_models_search_defaults_fill_what_a_request_leaves_unset_and_the_trace_says_so():
    defaults = SearchDefaults.from_json({"strategies": {"beam_search": [
        {"min_n": 8, "options": {"beam_width": 8, "temperature": 1.2}}]}}, source="search.json")
    settings = ServerSettings(search=SearchLimits(search_defaults=defaults))
    async with serving(StepFakeEngine(), settings, prm_factory=FakePRM) as (_, sdk, _):
        large = await search_call(sdk, {"strategy": "beam_search", "n": 16, "max_steps": 2, "return_trace": True})
        own = await search_call(sdk, {"strategy": "beam_search", "n": 16, "beam_width": 4, "max_steps": 2,
                                      "return_trace": True})
        small = await search_call(sdk, {"strategy": "beam_search", "n": 4, "max_steps": 2, "return_trace": True})
    assert large.model_extra["search_trace"]["defaults"] == {"beam_width": 8, "temperature": 1.2}
    assert len(large.model_extra["search_trace"]["candidates"]) == 8  # the beams kept
    assert own.model_extra["search_trace"]["defaults"] == {"temperature": 1.2}
    assert len(own.model_extra["search_trace"]["candidates"]) == 4
    assert "defaults" not in small.model_extra["search_trace"]


async def test_best_of_n_answers_with_usage_and_trace():
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (_, sdk, _):
        r = await search_call(sdk, {"strategy": "best_of_n", "n": 4, "seed": 1, "return_trace": True})
    trace = r.model_extra["search_trace"]
    assert r.choices[0].message.content.endswith("}") and "\\boxed" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert len(trace["candidates"]) == 4 and trace["strategy"] == "best_of_n"
    assert all(len(c["step_scores"]) == len(c["steps"]) for c in trace["candidates"])
    assert r.usage.completion_tokens == trace["tokens_generated"] > 0
    visible = trace["candidates"][0]["tokens"]
    assert r.usage.completion_tokens_details.reasoning_tokens == r.usage.completion_tokens - visible



async def test_the_servers_step_separator_cuts_the_policys_steps():
    separator = "\n---\n"
    engine = StepFakeEngine(separator=separator)
    async with serving(engine, ServerSettings(step_separator=separator), prm_factory=FakePRM) as (_, sdk, _):
        r = await search_call(sdk, {"strategy": "beam_search", "n": 2, "beam_width": 1, "return_trace": True})
    assert {params.stop for params in engine.params} == {(separator,)}
    best = r.model_extra["search_trace"]["candidates"][0]
    assert best["steps"][:2] == ["good first step", "good second step"] and len(best["steps"]) == 3
    assert r.choices[0].message.content == separator.join(best["steps"])

async def test_n_returns_distinct_answers():
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (_, sdk, _):
        r = await search_call(sdk, {"strategy": "majority_vote", "n": 6, "seed": 0}, n=3)
    answers = [c.message.content.split("boxed")[-1] for c in r.choices]
    assert len(answers) == 3 and len(set(answers)) == 3


async def test_adaptive_vote_stops_once_settled_and_bills_only_what_it_sampled():
    # Unseeded, the fake engine gives every sample the same answer: unanimous after the first wave.
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (_, sdk, _):
        fixed = await search_call(sdk, {"strategy": "majority_vote", "n": 16})
        r = await search_call(sdk, {"strategy": "majority_vote", "n": 16, "adaptive": True, "return_trace": True})
    trace = r.model_extra["search_trace"]
    assert (trace["stop_reason"], r.choices[0].finish_reason) == ("confident", "stop")
    assert trace["adaptive"]["samples"] == len(trace["candidates"]) == 4
    assert r.usage.completion_tokens * 4 == fixed.usage.completion_tokens


async def test_auto_traces_its_choice_and_takes_reasoning_effort_as_its_budget():
    # Without a PRM (the fake one scores every final step 0, which would leave any probe unsettled).
    async with serving(StepFakeEngine()) as (_, sdk, _):
        settled = await search_call(sdk, {"strategy": "auto", "return_trace": True}, reasoning_effort="high")
        # Seeded, the fake engine's answers cycle: the probe cannot settle, so the table's tier runs.
        unsettled = await search_call(sdk, {"strategy": "auto", "seed": 0, "max_tokens_total": 100,
                                            "return_trace": True})
    auto = settled.model_extra["search_trace"]["auto"]
    assert (auto["strategy"], auto["budget_tokens"], auto["table"]) == ("probe", 8000, "default")
    auto = unsettled.model_extra["search_trace"]["auto"]
    assert (auto["strategy"], auto["options"], auto["budget_tokens"]) == ("deepconf", {"n": 4}, 100)
    assert "warm-up" in auto["probe_reused"]
    assert "unsettled" in auto["why"] and "no PRM" in auto["why"]


@pytest.mark.parametrize("search, param", [
    ({"strategy": "telepathy"}, "search.strategy"),
    ({"strategy": "best_of_n", "aggregation": "prm_median_max"}, "search.aggregation"),
    ({"strategy": "beam_search", "n": 6, "beam_width": 4}, "search.n"),
    ({"strategy": "beam_search", "n": 512, "beam_width": 4}, "search.n"),
    ({"strategy": "best_of_n", "n": 0}, "search.n"),
    ({"strategy": "mcts", "c_puct": -1}, "search.c_puct"),
    ({"strategy": "best_of_n", "timeout_s": -2}, "search.timeout_s"),
    ({"strategy": "best_of_n", "max_tokens_total": 0}, "search.max_tokens_total"),
    ({"strategy": "best_of_n", "return_trace": "yes"}, "search.return_trace"),
    ({"strategy": "cot", "beam_width": 2}, "search.beam_width"),
    ({"strategy": "majority_vote", "adaptive": 1}, "search.adaptive"),
    ({"strategy": "best_of_n", "adaptive": True, "confidence": 2}, "search.confidence"),
    ({"strategy": "particle_filtering", "resample_temperature": 0}, "search.resample_temperature"),
    ({"strategy": "auto", "effort": "extreme"}, "search.effort"),
])
async def test_bad_search_options_are_400_naming_the_field(search, param):
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (_, sdk, _):
        with pytest.raises(openai.BadRequestError) as err:
            await search_call(sdk, search)
    assert err.value.body["param"] == param


async def test_a_prompt_no_solution_of_which_fits_the_prm_is_400_and_spares_other_searches():
    class QuestionTooLongPRM(FakePRM):
        def score_batch(self, pairs):
            if any(question.startswith("long") for question, _ in pairs):
                raise PRMInputTooLong("a candidate's PRM input is over the PRM's context")
            return super().score_batch(pairs)

    async with serving(StepFakeEngine(), prm_factory=QuestionTooLongPRM) as (_, sdk, _):
        long = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "long " * 50}],
                                           extra_body={"search": {"strategy": "best_of_n", "n": 2}})
        results = await asyncio.gather(long, search_call(sdk, {"strategy": "best_of_n", "n": 2}),
                                       return_exceptions=True)
    assert isinstance(results[0], openai.BadRequestError)
    assert results[0].body["param"] == "messages" and results[0].body["code"] == "context_length_exceeded"
    assert results[1].choices[0].message.content


async def test_prm_strategy_without_a_prm_is_400_saying_so():
    async with serving(StepFakeEngine()) as (_, sdk, _):
        with pytest.raises(openai.BadRequestError) as err:
            await search_call(sdk, {"strategy": "beam_search"})
        assert err.value.body["param"] == "search.strategy" and "reward model" in err.value.body["message"]
        r = await search_call(sdk, {"strategy": "majority_vote", "n": 3})  # fine without a PRM
    assert r.choices[0].message.content


class CountingEngine(StepFakeEngine):
    """Counts the samples it was asked for."""

    samples = 0

    def stream(self, prompt, params):
        self.samples += 1
        return super().stream(prompt, params)


@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "mcts"])
@pytest.mark.parametrize("stream", [False, True])
async def test_tree_searches_voting_at_the_end_still_need_a_prm_and_fail_before_sampling(strategy, stream):
    """They prune by PRM scores at every step; `majority_vote` only picks the final answer."""
    engine = CountingEngine()
    async with serving(engine) as (_, sdk, _):
        with pytest.raises(openai.BadRequestError) as err:
            await search_call(sdk, {"strategy": strategy, "aggregation": "majority_vote"}, stream=stream)
        voted = await search_call(sdk, {"strategy": "best_of_n", "aggregation": "majority_vote", "n": 3})
    assert err.value.body["param"] == "search.strategy" and err.value.body["code"] == "prm_unavailable"
    assert engine.samples == 3 and voted.choices[0].message.content  # only best_of_n's, which needs no PRM


@pytest.mark.parametrize("search, param", [
    ({"strategy": "best_of_n", "max_tokens_total": 262_145}, "search.max_tokens_total"),  # within Budget's range
    ({"strategy": "best_of_n", "timeout_s": 601}, "search.timeout_s"),  # within Budget's range
    ({"strategy": "mcts", "n_children": 16, "num_simulations": 17}, "search.n"),  # 272 samples, each option in range
])
async def test_server_limits_apply_to_the_parsed_options_before_sampling(search, param):
    engine = CountingEngine()
    async with serving(engine, prm_factory=FakePRM) as (_, sdk, _):
        with pytest.raises(openai.BadRequestError) as err:
            await search_call(sdk, search)
    assert err.value.body["param"] == param and "this server allows at most" in err.value.body["message"]
    assert engine.samples == 0


async def test_reasoning_effort_maps_to_a_preset():
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (_, sdk, _):
        low = await search_call(sdk, {"return_trace": True}, reasoning_effort="low")
    assert low.model_extra["search_trace"]["strategy"] == "best_of_n"
    assert len(low.model_extra["search_trace"]["candidates"]) == 4


async def test_token_budget_stops_the_search_with_length():
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (_, sdk, _):
        r = await search_call(sdk, {"strategy": "beam_search", "n": 8, "beam_width": 2, "max_tokens_total": 12,
                                    "return_trace": True})
    assert r.choices[0].finish_reason == "length"
    assert r.model_extra["search_trace"]["stop_reason"] == "tokens"
    assert r.usage.completion_tokens <= 12 + 8  # at most one token per sample over


async def test_the_time_limit_cancels_a_round_in_flight():
    """Each token takes a second and the search may take 0.3: the first round is
    cancelled, its samples freed, and the answer is empty, cut by the clock."""
    engine = StepFakeEngine(delay_s=1.0)
    async with serving(engine, prm_factory=FakePRM) as (_, sdk, _):
        r = await search_call(sdk, {"strategy": "beam_search", "n": 4, "beam_width": 2, "timeout_s": 0.3,
                                    "return_trace": True})
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == ""
    assert r.model_extra["search_trace"]["stop_reason"] == "time"
    assert r.usage.completion_tokens == 0 and engine.live == 0


async def test_streamed_search_reports_progress_then_the_answer():
    async with serving(StepFakeEngine(delay_s=0.15), prm_factory=FakePRM) as (http, _, _):  # > 1 s of search
        body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True},
                "search": {"strategy": "beam_search", "n": 4, "beam_width": 2}}
        r = await http.post("/v1/chat/completions", json=body)
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    assert r.text.rstrip().endswith("data: [DONE]")
    progress = [e for e in events if e["choices"] and "reasoning_content" in e["choices"][0]["delta"]]
    answers = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert progress and "tokens generated" in progress[0]["choices"][0]["delta"]["reasoning_content"]
    assert len(answers) == 1 and answers[0]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["usage"]["completion_tokens"] > 0


async def test_search_metrics_count_searches_and_prm_batches():
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (http, sdk, _):
        for _ in range(2):
            await search_call(sdk, {"strategy": "best_of_n", "n": 4})
        text = (await http.get("/metrics")).text
    assert metric_in(text, "openr:search_requests_total", strategy="best_of_n", outcome="completed") == 2
    assert metric_in(text, "openr:search_latency_seconds_count", strategy="best_of_n") == 2
    assert metric_in(text, "openr:prm_batch_size_count") >= 1
    assert metric_in(text, "openr:prm_batch_size_sum") == 8  # 2 searches x 4 candidates
    assert metric_in(text, "openr:request_success_total") == 2


async def test_the_trace_says_where_the_searchs_time_went():
    async with serving(StepFakeEngine(delay_s=0.01), prm_factory=FakePRM) as (_, sdk, _):
        beam = await search_call(sdk, {"strategy": "beam_search", "n": 2, "beam_width": 1, "return_trace": True})
        vote = await search_call(sdk, {"strategy": "majority_vote", "n": 2, "return_trace": True})
    beam_timing, vote_timing = (r.model_extra["search_trace"]["timing"] for r in (beam, vote))
    assert beam_timing["policy_round_trips"] == beam_timing["prm_round_trips"] == 3  # one of each per step
    assert (vote_timing["policy_round_trips"], vote_timing["prm_round_trips"], vote_timing["prm_seconds"]) == (1, 0, 0)
    for timing in (beam_timing, vote_timing):
        assert timing["policy_seconds"] > 0
        assert timing["policy_seconds"] + timing["prm_seconds"] <= timing["wall_seconds"]
        assert timing["other_seconds"] == pytest.approx(
            timing["wall_seconds"] - timing["policy_seconds"] - timing["prm_seconds"])


async def test_engine_requests_and_searches_are_timed_on_metrics():
    phases = [f"openr:request_{phase}_time_seconds" for phase in ("queue", "prefill", "decode", "inference")]
    async with serving(StepFakeEngine(), prm_factory=FakePRM) as (http, sdk, _):
        before = (await http.get("/metrics")).text
        r = await search_call(sdk, {"strategy": "beam_search", "n": 2, "beam_width": 1, "return_trace": True})
        searched = (await http.get("/metrics")).text
        await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, max_tokens=3)
        after = (await http.get("/metrics")).text
    timing = r.model_extra["search_trace"]["timing"]
    for name in phases + ["openr:search_policy_wait_seconds", "openr:search_prm_wait_seconds"]:
        assert f"# TYPE {name} histogram" in before and metric_in(before, f"{name}_count") == 0
    for name in phases:  # one per search round, then one for the plain request's two samples
        assert metric_in(searched, f"{name}_count") == timing["policy_round_trips"]
        assert metric_in(after, f"{name}_count") == timing["policy_round_trips"] + 1
    assert metric_in(searched, "openr:search_policy_wait_seconds_sum") == timing["policy_seconds"]
    assert metric_in(searched, "openr:search_prm_wait_seconds_sum") == timing["prm_seconds"]
    # the engine's phases of each call lie within the search's wait for it
    assert sum(metric_in(searched, f"{name}_sum") for name in phases[:3]) <= timing["policy_seconds"]


async def test_micro_batcher_coalesces_concurrent_calls():
    prm = FakePRM()
    batcher = MicroBatchingScorer(prm, micro_batch_size=64, max_wait_ms=20)
    calls = [batcher.score(f"q{i}", [["good"], ["bad", "good"]]) for i in range(16)]
    results = await asyncio.gather(*calls)
    await batcher.close()
    assert all(r == [[1.0], [0.0, 1.0]] for r in results)
    assert sum(prm.batches) == 32 and len(prm.batches) <= 2


async def test_one_calls_bad_input_fails_only_that_call():
    class TooLongRaisingPRM(FakePRM):
        def score_batch(self, pairs):
            if any(question == "too long" for question, _ in pairs):
                raise PRMInputTooLong("a candidate's PRM input is over the PRM's context")
            return super().score_batch(pairs)

    prm = TooLongRaisingPRM()
    batcher = MicroBatchingScorer(prm, micro_batch_size=64, max_wait_ms=20)
    results = await asyncio.gather(batcher.score("q1", [["good"]]), batcher.score("too long", [["good"]]),
                                   batcher.score("q2", [["bad"]]), return_exceptions=True)
    await batcher.close()
    assert results[0] == [[1.0]] and results[2] == [[0.0]]
    assert isinstance(results[1], PRMInputTooLong)
    assert prm.batches == [1, 1]  # the failed batch of 3 was retried call by call


async def test_cancelled_call_never_reaches_the_prm():
    prm = FakePRM()
    batcher = MicroBatchingScorer(prm, max_wait_ms=50)
    call = asyncio.ensure_future(batcher.score("q", [["good"]]))
    await asyncio.sleep(0.01)
    call.cancel()
    kept = await batcher.score("q", [["good"], ["good"]])
    await batcher.close()
    assert kept == [[1.0], [1.0]] and prm.batches == [2]
