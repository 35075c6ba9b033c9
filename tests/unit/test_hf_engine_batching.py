"""The hf engine's running batch: requests that arrive mid-batch join it, and
every row decodes exactly as it would alone (greedy), whatever joined or left."""

from __future__ import annotations

import asyncio

import pytest

from openr.engine.base import EngineRequestError, SamplingConfig
from openr.engine.checkpoints import split_bundle
from openr.engine.hf_engine import HFEngine

pytestmark = pytest.mark.anyio
POLICY = split_bundle("openr-arith")[0]
QUESTIONS = ["What is 3 + 4 * 2?", "Compute 17 - 5, then multiply by 3.", "What is 12 / 4 + 9 * 7 - 2?",
             "Start with 5. Add 8, multiply by 6, subtract 11.", "What is 2 * 3 * 4?"]


async def replies(engine: HFEngine, questions: list[str], max_tokens: list[int], delays: list[float]):
    """Each question's greedy reply, made to run its full `max_tokens` (the end of
    text is banned), and the order in which they finished."""
    finished = []
    no_end = tuple((token, -100.0) for token in sorted(engine.eos_ids))

    async def one(i: int) -> str:
        await asyncio.sleep(delays[i])
        prompt = await engine.prepare_chat([{"role": "user", "content": questions[i]}])
        config = SamplingConfig(max_tokens[i], temperature=0.0, logit_bias=no_end)
        text = (await engine.complete(prompt.text, config)).text
        finished.append(i)
        return text

    texts = await asyncio.gather(*(one(i) for i in range(len(questions))))
    return texts, finished


@pytest.fixture
async def engine():
    engine = HFEngine(POLICY, decode_batch_size=8)
    await engine.start()
    yield engine
    await engine.close()


async def test_a_request_arriving_mid_batch_joins_it_and_decodes_as_alone(engine):
    lengths = (400, 12)
    alone = [(await replies(engine, [q], [m], [0.0]))[0][0] for q, m in zip(QUESTIONS[:2], lengths)]
    no_end = tuple((token, -100.0) for token in sorted(engine.eos_ids))
    prompts = [(await engine.prepare_chat([{"role": "user", "content": q}])).text for q in QUESTIONS[:2]]
    decoding, finished = asyncio.Event(), []

    async def long_one() -> str:  # streamed, so its first token says it is decoding
        text = ""
        async for delta in engine.stream(prompts[0], SamplingConfig(lengths[0], temperature=0.0, logit_bias=no_end)):
            text += delta.text
            decoding.set()
        finished.append(0)
        return text

    async def short_one() -> str:  # sent while the long one decodes
        await decoding.wait()
        text = (await engine.complete(prompts[1], SamplingConfig(lengths[1], temperature=0.0, logit_bias=no_end))).text
        finished.append(1)
        return text

    together = await asyncio.gather(long_one(), short_one())
    assert list(together) == alone
    assert finished == [1, 0]  # it joined the running batch instead of waiting for its end


async def test_rows_joining_and_leaving_keep_every_reply_exact(engine):
    max_tokens = [200, 8, 150, 30, 5]
    delays = [0.0, 0.05, 0.2, 0.25, 0.5]
    alone = [(await replies(engine, [q], [m], [0.0]))[0][0] for q, m in zip(QUESTIONS, max_tokens)]
    together, _ = await replies(engine, QUESTIONS, max_tokens, delays)
    assert together == alone
    assert engine.active_sequences == 0


async def test_samples_of_one_prompt_share_a_prefill_and_sample_as_alone(engine):
    prompt = (await engine.prepare_chat([{"role": "user", "content": QUESTIONS[2]}])).text
    configs = [SamplingConfig(60, temperature=1.0, seed=seed) for seed in (1, 2, 3, 4)]
    alone = [(await engine.complete(prompt, config)).text for config in configs]
    together = [d.text for d in await asyncio.gather(*(engine.complete(prompt, c) for c in configs))]
    assert together == alone
    assert len(set(alone)) > 1  # the seeds made different samples, from one shared prefill


async def test_a_sample_not_streamed_comes_as_one_delta_with_the_streamed_text(engine):
    prompt = (await engine.prepare_chat([{"role": "user", "content": QUESTIONS[3]}])).text
    streamed = [d async for d in engine.stream(prompt, SamplingConfig(80, temperature=0.0, stop=("\n\n",)))]
    whole = [d async for d in engine.stream(prompt, SamplingConfig(80, temperature=0.0, stop=("\n\n",), stream=False))]
    assert len(streamed) > 3 and len(whole) == 1
    assert whole[0].text == "".join(d.text for d in streamed)
    assert whole[0].finish == streamed[-1].finish
    assert whole[0].token_logprobs == [x for d in streamed for x in d.token_logprobs]


def test_a_small_model_decodes_on_one_torch_thread_unless_omp_num_threads_says_otherwise():
    import os
    import subprocess
    import sys

    code = ("import asyncio, torch; from openr.engine.hf_engine import HFEngine; torch.set_num_threads(2); "
            f"e = HFEngine({str(POLICY)!r}); asyncio.run(e.start()); print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    chosen = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert chosen.stdout.split()[-1] == "1", chosen.stderr[-2000:]
    told = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "2"}, capture_output=True,
                          text=True, timeout=300)
    assert told.stdout.split()[-1] == "2", told.stderr[-2000:]


async def test_prompts_are_encoded_once_and_as_the_template_would(engine, monkeypatch):
    messages = [{"role": "user", "content": "What is 3 + 4 * 2? café"}]  # é is not in its vocabulary
    ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
    prompt = await engine.prepare_chat(messages)
    assert prompt.num_tokens == len(ids) and engine.prompt_ids(prompt.text) == tuple(ids)
    encodes = []
    backend = engine.tokenizer.backend_tokenizer
    monkeypatch.setattr(engine.tokenizer, "_tokenizer", _Counting(backend, encodes))
    await engine.complete(prompt.text, SamplingConfig(4, temperature=0.0))
    assert encodes == []  # the sample reused the ids its prompt was counted with
    engine.PROMPT_CACHE_SIZE = 2
    for text in ("a", "b", "c"):
        engine.prompt_ids(text)
    assert encodes == ["a", "b", "c"]
    assert list(engine._prompt_cache) == ["b", "c"]  # the least recently used went first


class _Counting:
    """A tokenizer backend that notes each text it encodes."""

    def __init__(self, backend, seen: list):
        self.backend, self.seen = backend, seen

    def encode(self, text, **kwargs):
        self.seen.append(text)
        return self.backend.encode(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.backend, name)


async def test_an_empty_prompt_is_refused_without_failing_the_batch_beside_it(engine):
    prompt = await engine.prepare_chat([{"role": "user", "content": QUESTIONS[0]}])
    running = asyncio.create_task(engine.complete(prompt.text, SamplingConfig(8, temperature=0.0)))
    await asyncio.sleep(0)
    with pytest.raises(EngineRequestError, match="empty"):
        await engine.complete("", SamplingConfig(4, temperature=0.0))
    assert (await running).num_tokens > 0
