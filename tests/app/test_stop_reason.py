"""`openr serve` reports vLLM's `stop_reason`: the stop string that ended a
choice, null at the end of text or at max_tokens. A front on it
(`--engine openai`) reads that field to tell a step's end from a solution's,
as it does on a vLLM replica; without it every "stop" looked like a step."""

from __future__ import annotations

import json

import pytest

from openr.engine.base import SamplingConfig
from openr.engine.checkpoints import split_bundle
from openr.engine.hf_engine import HFEngine
from openr.engine.openai_engine import OpenAIEngine
from openr.server.app import build_app
from openr.server.settings import ServerSettings
from tests.support.app_client import MODEL, serving
from tests.support.fake_engine import StepFakeEngine
from tests.support.recording_backend import recording_backend

pytestmark = pytest.mark.anyio
STOPS = [" zeta", " gamma"]  # the fake writes "alpha beta gamma ...": " gamma" ends it


async def test_a_completion_names_the_stop_string_that_ended_it():
    async with serving() as (http, _, _):
        ended = (await http.post("/v1/completions", json={"model": MODEL, "prompt": "go", "max_tokens": 8,
                                                          "stop": STOPS})).json()["choices"][0]
        ran_out = (await http.post("/v1/completions", json={"model": MODEL, "prompt": "go", "max_tokens": 2,
                                                            "stop": STOPS})).json()["choices"][0]
    assert (ended["text"], ended["finish_reason"], ended["stop_reason"]) == ("alpha beta", "stop", " gamma")
    assert (ran_out["finish_reason"], ran_out["stop_reason"]) == ("length", None)


async def test_a_streamed_completion_names_it_on_the_last_chunk():
    body = {"model": MODEL, "prompt": "go", "max_tokens": 8, "stop": STOPS, "stream": True}
    async with serving() as (http, _, _):
        text = (await http.post("/v1/completions", json=body)).text
    choices = [json.loads(line[len("data: "):])["choices"][0] for line in text.splitlines()
               if line.startswith("data: {")]
    assert [c["stop_reason"] for c in choices] == [None] * (len(choices) - 1) + [" gamma"]
    assert choices[-1]["finish_reason"] == "stop"


async def test_a_chat_completion_names_it_too():
    async with serving() as (_, sdk, _):
        r = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}],
                                              max_tokens=8, stop=STOPS)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].model_extra["stop_reason"] == " gamma"


async def test_a_front_on_openr_serve_tells_a_step_from_the_end_of_text():
    """StepFakeEngine writes three steps and then its end of text: through a
    replica's /v1/completions the front sees two steps and then eos."""
    replica = build_app(StepFakeEngine(), MODEL, ServerSettings())
    with recording_backend(replica) as backend:  # uvicorn runs its lifespan; /health waits for it
        front = OpenAIEngine(backend.url)
        await front.start()
        prefix, finishes = "<user>q<assistant>", []
        for _ in range(3):
            step = (await front.generate_steps([prefix], 1, ["\n\n"], 32, 0.0))[0][0]
            finishes.append(step.finish_reason)
            prefix += step.text + "\n\n"
        await front.close()
    assert finishes == ["step", "step", "eos"]


async def test_the_hf_engine_names_the_stop_string():
    engine = HFEngine(split_bundle("openr-arith")[0])
    await engine.start()
    try:
        prompt = await engine.prepare_chat([{"role": "user", "content": "What is 3 + 4 * 2?"}])
        done = await engine.complete(prompt.text, SamplingConfig(60, temperature=0.0, stop=("ZZZ", " is")))
    finally:
        await engine.close()
    assert (done.finish, done.stop_reason) == ("stop", " is")
    assert " is" not in done.text
