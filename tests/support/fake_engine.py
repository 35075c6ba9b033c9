"""A deterministic stand-in engine for app-level tests (no model, no torch)."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from typing import AsyncIterator

from openr.engine.base import Delta, Engine, PreparedPrompt, SamplingConfig, StopStringMatcher, TokenLogprob
from openr.engine.timing import SampleTiming

WORDS = ["alpha", " beta", " gamma", " delta", " epsilon", " zeta", " eta", " theta"]


class FakeEngine(Engine):
    """Emits WORDS cyclically, one token each, `delay_s` apart; honours stop
    strings and max_tokens like a real backend, and reports each word (with
    the next two words as alternatives) when asked for logprobs. Counts live
    samples, and times each as the hf engine does (prefill: to its first token)."""

    name = "fake"
    features = frozenset({"logprobs"})

    def __init__(self, delay_s: float = 0.0, max_model_len: int = 256, features: frozenset | None = None,
                 vocab_size: int = 0):
        self.delay_s = delay_s
        self.max_model_len = max_model_len
        self.features = self.features if features is None else features
        self.vocab_size = vocab_size
        self.params: list[SamplingConfig] = []
        self.live = 0
        self.cancelled = 0

    async def start(self) -> None:
        pass

    @property
    def active_sequences(self) -> int:
        return self.live

    async def prepare_chat(self, messages: list[dict]) -> PreparedPrompt:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        return PreparedPrompt(text, len(text.split()))

    async def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    async def detokenize(self, token_ids: list[int]) -> str:
        return " ".join("x" for _ in token_ids)

    async def stream(self, prompt: str, params: SamplingConfig) -> AsyncIterator[Delta]:
        started, first_token_at = time.monotonic(), None
        async with aclosing(self.deltas(prompt, params)) as deltas:  # closing this sample closes them at once
            async for delta in deltas:
                first_token_at = first_token_at or time.monotonic()
                if delta.finish:
                    delta.timing = SampleTiming(started, first_token_at - started, time.monotonic())
                yield delta

    async def deltas(self, prompt: str, params: SamplingConfig) -> AsyncIterator[Delta]:
        """The sample's deltas, untimed."""
        matcher = StopStringMatcher(params.stop)
        self.params.append(params)
        self.live += 1
        text = ""
        try:
            for i in range(params.max_tokens):
                await asyncio.sleep(self.delay_s)
                word = WORDS[(i + (params.seed or 0)) % len(WORDS)]
                hit = matcher.find(text + word, len(text))
                tokens = None
                if params.top_logprobs is not None:
                    following = [WORDS[(i + (params.seed or 0) + k) % len(WORDS)] for k in (1, 2)]
                    tokens = [TokenLogprob(word, -0.5, tuple((w, -1.5) for w in following[:params.top_logprobs]))]
                if hit is not None:
                    yield Delta((text + word)[len(text):hit], [-0.5], "stop", tokens,
                                stop_reason=matcher.stop_at(text + word, hit))
                    return
                text += word
                yield Delta(word, [-0.5], None, tokens)
            yield Delta("", [], "length")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.live -= 1


class FakePRM:
    """Scores a step 1.0 when it contains "good", else 0.0. Batch interface, like StepTagPRM."""

    def __init__(self):
        self.batches: list[int] = []

    def score_batch(self, pairs) -> list[list[float]]:
        self.batches.append(len(pairs))
        return [[1.0 if "good" in step else 0.0 for step in steps] for _, steps in pairs]


class StepFakeEngine(FakeEngine):
    """Writes a fixed three-step solution, one word per token, continuing from
    however many steps the prompt already holds; the answer depends on the seed,
    so samples disagree. Its steps end with `separator`."""

    STEPS = ["good first step", "good second step", "The answer is \\boxed{{{answer}}}"]

    def __init__(self, *args, separator: str = "\n\n", **kwargs):
        super().__init__(*args, **kwargs)
        self.separator = separator

    async def deltas(self, prompt: str, params: SamplingConfig) -> AsyncIterator[Delta]:
        done = prompt.split("<assistant>")[-1].count(self.separator)
        answer = (params.seed or 0) % 3
        words = self.separator.join(self.STEPS[done:]).format(answer=answer).split(" ")
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
        matcher = StopStringMatcher(params.stop)
        self.params.append(params)
        self.live += 1
        text = ""
        try:
            for i, token in enumerate(tokens[: params.max_tokens]):
                await asyncio.sleep(self.delay_s)
                hit = matcher.find(text + token, len(text))
                if hit is not None:
                    yield Delta((text + token)[len(text):hit], [-0.1], "stop",
                                stop_reason=matcher.stop_at(text + token, hit))
                    return
                text += token
                yield Delta(token, [-0.1], None)
            yield Delta("", [-0.1] if len(tokens) <= params.max_tokens else [],
                        "eos" if len(tokens) <= params.max_tokens else "length")
        finally:
            self.live -= 1
