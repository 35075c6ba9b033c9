"""A search's monitor halts a sample in the engine: the sample stops growing there
and its slot is freed, while the samples beside it run on (hf: in its decode
loop, at the very token; vLLM: the request is aborted as the delta arrives)."""

from __future__ import annotations

import asyncio

import pytest

from openr.engine.base import SamplingConfig
from openr.engine.checkpoints import split_bundle

pytestmark = pytest.mark.anyio
POLICY = split_bundle("openr-arith")[0]
QUESTION = [{"role": "user", "content": "Start with 5. Add 8, multiply by 6, subtract 11."}]
LONG = 120  # tokens a sample runs when nothing halts it (the end of text is banned)
HALT_AT = 5


class HaltAt:
    """Says halt at token `at` (and at every token after, were it shown more); counts
    the tokens it is shown and the top-k it gets with each."""

    def __init__(self, at: int):
        self.at, self.shown, self.top_sizes = at, 0, []

    def __call__(self, logprob: float, top) -> bool:
        self.shown += 1
        self.top_sizes.append(len(top))
        return self.shown >= self.at


def config(engine, monitor=None, top_logprobs=None) -> SamplingConfig:
    eos = getattr(engine, "eos_ids", {engine.tokenizer.eos_token_id})
    no_end = tuple((token, -100.0) for token in sorted(eos))
    return SamplingConfig(LONG, temperature=1.0, logit_bias=no_end, top_logprobs=top_logprobs, monitor=monitor,
                          seed=1)


@pytest.fixture
async def hf_engine():
    from openr.engine.hf_engine import HFEngine

    engine = HFEngine(POLICY, decode_batch_size=8)
    await engine.start()
    yield engine
    await engine.close()


async def test_hf_halts_a_sample_at_the_token_its_monitor_names_while_the_batch_runs_on(hf_engine):
    engine = hf_engine
    prompt = (await engine.prepare_chat(QUESTION)).text
    monitor = HaltAt(HALT_AT)
    beside = asyncio.create_task(engine.sample(prompt, config(engine)))
    halted = await engine.sample(prompt, config(engine, monitor, top_logprobs=3))
    assert halted.finish == "halted" and halted.num_tokens == HALT_AT
    assert monitor.top_sizes == [3] * HALT_AT
    assert len(halted.tokens) == HALT_AT and all(len(t.top) == 3 for t in halted.tokens)
    whole = await beside  # the batch decodes on for the other sample's 115 more tokens ...
    assert whole.num_tokens == LONG
    assert monitor.shown == HALT_AT  # ... and the halted sample got none of them
    assert engine.active_sequences == 0


async def test_hf_policy_steps_carry_logprobs_and_the_halt(hf_engine):
    prompt = (await hf_engine.prepare_chat(QUESTION)).text
    [[free, halted]] = await hf_engine.generate_steps([prompt], 2, [], 40, 1.0, seed=3, top_logprobs=2,
                                                      monitor=lambda: HaltAt(HALT_AT))
    assert halted.finish_reason == "halted" and halted.num_tokens == HALT_AT
    assert len(halted.token_logprobs) == HALT_AT and len(halted.top_logprobs) == HALT_AT
    assert free.finish_reason in ("halted", "eos")  # its own monitor: halted at 5 too, unless it ended first
    assert all(len(top) == 2 and top[0] >= top[1] for top in halted.top_logprobs)
    [[plain]] = await hf_engine.generate_steps([prompt], 1, [], 40, 1.0, seed=3)
    assert plain.token_logprobs == () and plain.top_logprobs == ()  # only asked for, they are carried


async def test_a_monitor_that_raises_fails_its_own_sample_and_not_the_batch_beside_it(hf_engine):
    def broken(logprob, top):
        raise RuntimeError("a monitor's bug")

    prompt = (await hf_engine.prepare_chat(QUESTION)).text
    beside = asyncio.create_task(hf_engine.sample(prompt, config(hf_engine)))
    with pytest.raises(RuntimeError, match="a monitor's bug"):
        await hf_engine.sample(prompt, config(hf_engine, broken))
    assert (await beside).num_tokens == LONG


def generated_tokens_in_vllm() -> float:
    """vLLM's own count of the tokens it generated (its Prometheus counter, in process)."""
    from prometheus_client import REGISTRY

    return sum(sample.value for metric in REGISTRY.collect() if metric.name == "vllm:generation_tokens"
               for sample in metric.samples if sample.name.endswith("_total"))


@pytest.mark.vllm
async def test_vllm_aborts_a_halted_sample_so_it_stops_growing():
    from openr.engine.vllm_engine import VLLMEngine

    engine = VLLMEngine(POLICY)
    await engine.start()
    try:
        prompt = (await engine.prepare_chat(QUESTION)).text
        before = generated_tokens_in_vllm()
        monitor = HaltAt(HALT_AT)
        halted = await engine.sample(prompt, config(engine, monitor, top_logprobs=3))
        assert halted.finish == "halted" and HALT_AT <= halted.num_tokens < LONG
        assert all(len(t.top) == 3 for t in halted.tokens)
        for _ in range(200):  # the abort reaches vLLM's engine process
            if engine.llm.output_processor.get_num_unfinished_requests() == 0:
                break
            await asyncio.sleep(0.05)
        assert engine.llm.output_processor.get_num_unfinished_requests() == 0
        generated = generated_tokens_in_vllm() - before
        assert halted.num_tokens <= generated < LONG  # vLLM stopped it: it never ran to its 120 tokens
        assert engine.active_sequences == 0
    finally:
        await engine.close()
