"""strategy deepconf behind /v1/chat/completions (fake engine, no PRM): the trace
says each sample's confidence and how it ended, halted samples are counted in
usage and metrics, progress streams, and bad options are OpenAI-shaped 400s."""

from __future__ import annotations

import json

import openai
import pytest

from openr.engine.base import TokenLogprob
from openr.server.metrics import metric_in
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import StepFakeEngine

pytestmark = pytest.mark.anyio
MESSAGES = [{"role": "user", "content": "q"}]
WARMUP = 4


class HesitantEngine(StepFakeEngine):
    """StepFakeEngine's solutions (answer: seed % 3), every token's top-k [-c]: the
    warm-up's samples (seeds 0-3) are sure (c = 3) throughout, later ones hesitate
    (c = 0.5) from their third token, so a window of 2 halts them there."""

    async def deltas(self, prompt, params):
        seen = 0
        async for delta in super().deltas(prompt, params):
            sure = (params.seed or 0) < WARMUP or seen < 2
            seen += delta.num_tokens
            if params.top_logprobs is not None:
                delta.tokens = [TokenLogprob("w", -0.1, (("w", -3.0 if sure else -0.5),))] * delta.num_tokens
            yield delta


def deepconf(**options) -> dict:
    return {"strategy": "deepconf", "n": 8, "window": 2, "seed": 0, "warmup": WARMUP, **options}


async def test_deepconf_halts_hesitant_samples_and_the_trace_usage_and_metrics_say_so():
    async with serving(HesitantEngine()) as (http, sdk, engine):
        r = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES,
                                              extra_body={"search": deepconf(return_trace=True)})
        metrics = (await http.get("/metrics")).text
    trace = r.model_extra["search_trace"]
    report = trace["deepconf"]
    assert report["threshold"] == pytest.approx(3.0)
    assert [s["ended"] for s in report["per_sample"]] == ["eos"] * WARMUP + ["halted"] * 4
    assert [s["tokens"] for s in report["per_sample"]][WARMUP:] == [3] * 4
    assert report["halted"] == 4 and report["voting"] == WARMUP
    assert r.usage.completion_tokens == trace["tokens_generated"] == sum(s["tokens"] for s in report["per_sample"])
    assert all(p.monitor is not None for p in engine.params[WARMUP:]) and engine.live == 0
    assert metric_in(metrics, "openr:search_samples_halted_total", strategy="deepconf") == 4
    assert metric_in(metrics, "openr:search_requests_total", strategy="deepconf", outcome="completed") == 1


@pytest.mark.parametrize("options, param", [
    ({"measure": "tail"}, "search.measure"),
    ({"mode": "later"}, "search.mode"),
    ({"keep_percent": 0}, "search.keep_percent"),
    ({"top_logprobs": 50}, "search.top_logprobs"),
    ({"consensus": 2}, "search.consensus"),
    ({"beam_width": 2}, "search.beam_width"),
])
async def test_bad_deepconf_options_are_openai_shaped_400s(options, param):
    async with serving(HesitantEngine()) as (_, sdk, engine):
        with pytest.raises(openai.BadRequestError) as error:
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES,
                                              extra_body={"search": deepconf(**options)})
    body = error.value.body
    assert error.value.status_code == 400 and body["param"] == param and body["type"] == "invalid_request_error"
    assert engine.params == []  # refused before any sampling


async def test_a_streamed_deepconf_search_reports_its_samples_as_it_goes():
    async with serving(HesitantEngine(delay_s=0.3)) as (http, _, _):  # a warm-up of about 4 s
        body = {"model": MODEL, "messages": MESSAGES, "stream": True, "search": deepconf()}
        r = await http.post("/v1/chat/completions", json=body)
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    notes = [e["choices"][0]["delta"]["reasoning_content"] for e in events
             if e["choices"] and "reasoning_content" in e["choices"][0]["delta"]]
    assert any("samples (" in note and "halted), consensus" in note for note in notes)
    assert r.text.rstrip().endswith("data: [DONE]")
