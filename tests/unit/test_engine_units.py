"""Engine building blocks that need no model: stop strings, sampling, the
Policy contract, the timing of engine calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from openr.engine.base import SamplingConfig, StopStringMatcher
from openr.engine.sampling import _top_p, next_tokens
from openr.engine.timing import CallTiming, SampleTiming, call_timing
from openr.engine.vllm_engine import sample_timing
from tests.support.fake_engine import FakeEngine


def test_stop_string_found_across_token_boundaries():
    matcher = StopStringMatcher(["\n\n", "END"])
    text = "step one\n"
    assert matcher.find(text) is None
    text += "\nstep two"
    assert matcher.find(text, search_from=9) == 8
    assert matcher.find("abcEN") is None and matcher.find("abcEND", 5) == 3


def test_the_stop_string_found_is_named():
    matcher = StopStringMatcher(["END", "\n", "\n\n"])
    assert matcher.stop_at("a\n\nb", matcher.find("a\n\nb")) == "\n"  # the first listed, as vLLM names it
    assert matcher.stop_at("xEND", matcher.find("xEND")) == "END"


def test_streamed_text_holds_back_a_possible_stop_prefix():
    matcher = StopStringMatcher(["END"])
    assert matcher.safe_length("hello EN") == 6  # "EN" may still become "END"
    assert StopStringMatcher([]).safe_length("hello") == 5


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = _top_p(probs.clone(), 0.7)
    assert torch.allclose(kept, torch.tensor([0.5, 0.3, 0.0, 0.0]) / 0.8)
    assert torch.count_nonzero(_top_p(probs.clone(), 0.01)) == 1


def test_temperature_zero_is_argmax_and_logprob_is_raw():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    chosen, logprobs, _ = next_tokens(logits, [SamplingConfig(4, temperature=0.0)] * 2, [[], []])
    assert chosen.tolist() == [1, 0]
    assert torch.allclose(logprobs, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])


def test_penalties_and_logit_bias_steer_greedy_choice_but_not_the_reported_logprob():
    logits = torch.tensor([[3.0, 2.5, 0.0, 0.0]])
    raw = torch.log_softmax(logits, -1)[0]
    greedy = SamplingConfig(4, temperature=0.0)
    assert next_tokens(logits, [greedy], [[0, 0]])[0].tolist() == [0]
    # token 0 output twice: frequency 0.3 x 2 = 0.6 > the 0.5 lead
    chosen, logprob, _ = next_tokens(logits, [SamplingConfig(4, 0.0, frequency_penalty=0.3)], [[0, 0]])
    assert chosen.tolist() == [1] and torch.isclose(logprob[0], raw[1])
    # presence counts once: 0.3 < 0.5, token 0 stays; 0.6 > 0.5 moves it
    assert next_tokens(logits, [SamplingConfig(4, 0.0, presence_penalty=0.3)], [[0, 0]])[0].tolist() == [0]
    assert next_tokens(logits, [SamplingConfig(4, 0.0, presence_penalty=0.6)], [[0, 0]])[0].tolist() == [1]
    # a negative penalty favours repeats; bias forces or bans a token
    assert next_tokens(logits, [SamplingConfig(4, 0.0, presence_penalty=-1.0)], [[1]])[0].tolist() == [1]
    assert next_tokens(logits, [SamplingConfig(4, 0.0, logit_bias=((3, 100.0),))], [[]])[0].tolist() == [3]
    assert next_tokens(logits, [SamplingConfig(4, 0.0, logit_bias=((0, -100.0),))], [[]])[0].tolist() == [1]
    # rows of one batch keep their own settings
    both = next_tokens(logits.repeat(2, 1), [greedy, SamplingConfig(4, 0.0, logit_bias=((2, 50.0),))], [[], []])
    assert both[0].tolist() == [0, 2]


def test_top_alternatives_are_the_raw_top_k_for_rows_that_ask():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]] * 2)
    _, _, tops = next_tokens(logits, [SamplingConfig(4, 0.0, top_logprobs=2), SamplingConfig(4, 0.0)], [[], []])
    ids, values = tops[0]
    assert ids == [1, 3] and torch.allclose(torch.tensor(values), torch.log_softmax(logits[0], -1)[[1, 3]])
    assert tops[1] is None


@pytest.mark.parametrize("seed", [2**62, 2**63 - 1, 10**30, -7])
def test_any_integer_seed_samples_reproducibly(seed):
    """Seeds past torch's 64-bit range (a client's, or one derived from a
    round number in RL) are folded into it instead of failing the batch."""
    logits = torch.randn(1, 50)
    first, *_ = next_tokens(logits, [SamplingConfig(4, temperature=1.0, seed=seed)], [[0] * 3])
    again, *_ = next_tokens(logits, [SamplingConfig(4, temperature=1.0, seed=seed)], [[0] * 3])
    assert torch.equal(first, again)


def test_seeded_sampling_is_reproducible_per_row_whatever_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    seeded = SamplingConfig(4, temperature=1.0, seed=11)
    alone, *_ = next_tokens(logits[:1], [seeded], [[0] * 5])
    for _ in range(3):
        batch, *_ = next_tokens(logits, [seeded, SamplingConfig(4, 1.0), SamplingConfig(4, 1.0)], [[0] * 5, [], []])
        assert batch[0] == alone[0]


@pytest.mark.anyio
async def test_generate_steps_returns_n_steps_per_prefix_split_at_the_stop():
    engine = FakeEngine()
    steps = await engine.generate_steps(["p1", "p2", "p3"], n=2, stop=[" gamma"], max_tokens=5, temperature=1.0)
    assert [len(s) for s in steps] == [2, 2, 2]
    first = steps[0][0]
    assert first.text == "alpha beta" and first.finish_reason == "step" and first.num_tokens == 3
    long = await engine.generate_steps(["p"], n=1, stop=["never"], max_tokens=2, temperature=1.0)
    assert long[0][0].finish_reason == "length" and long[0][0].num_tokens == 2


def test_a_calls_phases_add_up_and_a_late_samples_wait_is_queue():
    # sent at 0; sample A prefills 1-1.5, sample B waits for room until 2, prefills 2-2.25; the last ends at 4
    timing = call_timing(0.0, [SampleTiming(1.0, 0.5, 3.0), SampleTiming(2.0, 0.25, 4.0)])
    assert timing == CallTiming(queue_s=1.5, prefill_s=0.75, decode_s=1.75)
    assert timing.queue_s + timing.inference_s == 4.0


def test_overlapping_prefills_count_once():
    timing = call_timing(0.0, [SampleTiming(1.0, 0.5, 3.0), SampleTiming(1.25, 0.5, 3.0)])
    assert timing == CallTiming(queue_s=1.0, prefill_s=0.75, decode_s=1.25)


def test_vllm_request_stamps_move_onto_our_clock_at_arrival():
    stats = SimpleNamespace(scheduled_ts=100.0, first_token_ts=100.5, last_token_ts=102.0)
    assert sample_timing(stats, received=7.0) == SampleTiming(5.0, 0.5, 7.0)
    assert sample_timing(None, received=7.0) is None  # vLLM kept no statistics


class UntimedEngine(FakeEngine):
    """A backend that keeps no time (as the remote one)."""

    stream = FakeEngine.deltas


@pytest.mark.anyio
async def test_a_timed_backends_calls_are_reported_and_untimed_ones_are_not():
    seen = []
    for engine in (FakeEngine(delay_s=0.01), UntimedEngine()):
        engine.on_call_timed = seen.append
        await engine.generate_steps(["p1", "p2"], n=2, stop=[], max_tokens=3, temperature=1.0)
    [timing] = seen
    assert min(timing.queue_s, timing.prefill_s, timing.decode_s) >= 0.0


def test_top_p_below_float32s_smallest_number_keeps_the_top_token():
    probs = torch.tensor([0.1, 0.6, 0.3])
    assert _top_p(probs, 1e-300).tolist() == [0.0, 1.0, 0.0]  # 1e-300 is 0 in float32; it used to drop every token
    assert _top_p(probs, 0.65).tolist() == pytest.approx([0.0, 0.6 / 0.9, 0.3 / 0.9])
