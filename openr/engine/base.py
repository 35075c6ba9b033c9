"""What every policy backend provides, and the `Policy` contract built on it.

A backend implements one primitive, `stream`: a single sample of one prompt,
yielded as text deltas with per-token log-probabilities. Everything else
(`n` samples, many prefixes at once, step splitting) is composed here, so the
backends stay small and behave the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Sequence

from openr.contracts import Step, TokenMonitor
from openr.engine.timing import CallTiming, SampleTiming, call_timing

# Why a sample ended: its EOS token, one of the stop strings, max_tokens, or its
# `SamplingConfig.monitor` (a search's early stop).
Finish = Literal["eos", "stop", "length", "halted"]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters for one sample; validated by the caller (the server)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI's: minus this once a token has appeared in the output
    frequency_penalty: float = 0.0  # minus this for every time it has appeared
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added to the logits
    top_logprobs: int | None = None  # report each token (and this many alternatives); None: don't
    json_object: bool = False  # the output must be one JSON object
    json_schema: str | None = None  # ... valid under this JSON schema (as JSON text)
    ignore_eos: bool = False  # vLLM's: the end-of-text token does not end the sample
    # Deliver the text as it is generated; False: one delta when the sample ends
    # (non-streamed responses and searches). Not sampling, but it saves the
    # event loop a wake-up and a queue hop per token.
    stream: bool = True
    # Called with every generated token's log-probability and top-k (with
    # `top_logprobs`); True halts the sample at that token. Searches only.
    monitor: TokenMonitor | None = field(default=None, compare=False)

    @property
    def penalised(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as OpenAI's `logprobs.content` shows it: its text, its
    raw log-probability, and the most likely alternatives at its position."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Delta:
    """New output of one sample: text, one log-probability per new token, and
    `finish` on the last delta. The stop string that ended a sample is never part
    of `text`; the last delta names it in `stop_reason` (as vLLM's `stop_reason`
    does; None at eos and length). `tokens` is filled only when the sample's
    `top_logprobs` asked for it; `timing` only on the last delta, by backends
    that time their samples (hf, vllm)."""

    text: str
    token_logprobs: list[float] = field(default_factory=list)
    finish: Finish | None = None
    tokens: list[TokenLogprob] | None = None
    timing: SampleTiming | None = None
    stop_reason: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_logprobs)


@dataclass(frozen=True)
class PreparedPrompt:
    text: str
    num_tokens: int


class EngineError(RuntimeError):
    """The backend failed on a request it accepted (not the client's fault)."""


class EngineRequestError(ValueError):
    """The backend refused a request as invalid (a remote server's 4xx)."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class Engine(ABC):
    """A loaded policy model that streams samples. Implements `Policy`."""

    name: str = "base"
    device: str = "cpu"
    max_model_len: int = 0
    vocab_size: int = 0  # 0: unknown (a remote backend checks token ids itself)
    dtype: str = "unknown"  # the weights' dtype, as /version reports it
    # What the backend honours beyond plain sampling (the server refuses the rest):
    # "penalties", "logit_bias", "logprobs" (per-token text and top alternatives),
    # "json_output" (response_format json_object / json_schema).
    features: frozenset[str] = frozenset()
    # Whether `stream` itself asks `SamplingConfig.monitor` at every token (the hf
    # engine, in its decode loop); otherwise `sample` asks it as deltas arrive
    # and closes the stream, which aborts the sample in the backend.
    halts_in_engine: bool = False
    # Told how each call (`generate_steps`, `stream_many`) spent its time, when
    # the backend timed all its samples; the server's metrics set it.
    on_call_timed: Callable[[CallTiming], None] | None = None

    @abstractmethod
    async def start(self) -> None:
        """Load weights; called once before serving."""

    async def close(self) -> None:
        """Release the backend's resources."""

    @abstractmethod
    async def prepare_chat(self, messages: list[dict]) -> PreparedPrompt:
        """Render chat messages with the model's chat template, ready to generate."""

    @abstractmethod
    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, without adding special tokens."""

    @abstractmethod
    async def detokenize(self, token_ids: list[int]) -> str:
        """Text of token ids."""

    @abstractmethod
    def stream(self, prompt: str, params: SamplingConfig) -> AsyncIterator[Delta]:
        """Generate one sample. Closing the iterator early aborts the sample."""

    @property
    def active_sequences(self) -> int:
        """Samples the backend is generating right now (for metrics and tests)."""
        return 0

    async def stream_many(self, prompt: str, configs: Sequence[SamplingConfig]) -> AsyncIterator[tuple[int, Delta]]:
        """Several samples of one prompt at once, as (sample index, delta) in arrival order.
        Closing the iterator early aborts every sample still running."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, params: SamplingConfig) -> None:
            try:
                async for delta in self.stream(prompt, params):
                    queue.put_nowait((index, delta))
            except Exception as exc:
                queue.put_nowait((index, exc))

        submitted = time.monotonic()
        tasks = [asyncio.create_task(pump(i, c)) for i, c in enumerate(configs)]
        timings = []
        try:
            running = len(tasks)
            while running:
                index, item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield index, item
                if item.finish is not None:
                    running -= 1
                    timings.append(item.timing)
            self._report_call(submitted, timings)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def complete(self, prompt: str, params: SamplingConfig) -> Delta:
        """One whole sample: all deltas joined."""
        text, logprobs, finish, timing, stop_reason = [], [], None, None, None
        async for delta in self.stream(prompt, dataclasses.replace(params, stream=False)):
            text.append(delta.text)
            logprobs.extend(delta.token_logprobs)
            finish = delta.finish or finish
            timing = delta.timing or timing
            stop_reason = delta.stop_reason or stop_reason
        return Delta("".join(text), logprobs, finish or "length", timing=timing, stop_reason=stop_reason)

    async def generate_steps(
        self,
        prefixes: Sequence[str],
        n: int,
        stop: Sequence[str],
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int | None = None,
        top_logprobs: int = 0,
        monitor: Callable[[], TokenMonitor] | None = None,
    ) -> list[list[Step]]:
        """The `Policy` contract: n samples of every prefix, all in flight at once
        so the backend batches them."""
        seeds = itertools.count(seed) if seed is not None else itertools.repeat(None)
        jobs = [
            self.sample(prefix, SamplingConfig(max_tokens, temperature, top_p, tuple(stop), next(seeds),
                                               top_logprobs=top_logprobs or None,
                                               monitor=monitor() if monitor else None))
            for prefix in prefixes
            for _ in range(n)
        ]
        submitted = time.monotonic()
        done = await asyncio.gather(*jobs)
        self._report_call(submitted, [d.timing for d in done])
        steps = [_step(d, top_logprobs > 0) for d in done]
        return [steps[i * n : (i + 1) * n] for i in range(len(prefixes))]

    async def sample(self, prompt: str, params: SamplingConfig) -> Delta:
        """One whole sample for a search: `complete`, with each token's top
        alternatives kept (`params.top_logprobs`), halted where `params.monitor`
        says (finish "halted"; its tokens up to there are reported and counted)."""
        if params.monitor is None and params.top_logprobs is None:
            return await self.complete(prompt, params)
        watch = None if self.halts_in_engine else params.monitor
        text, logprobs, tokens, finish, timing = [], [], [], None, None
        async with aclosing(self.stream(prompt, dataclasses.replace(params, stream=watch is not None))) as deltas:
            async for delta in deltas:  # leaving the loop early closes the stream: the backend aborts the sample
                text.append(delta.text)
                logprobs.extend(delta.token_logprobs)
                tokens.extend(delta.tokens or ())
                finish, timing = delta.finish or finish, delta.timing or timing
                if watch is not None and finish is None and _halts(watch, delta):
                    finish = "halted"
                    break
        return Delta("".join(text), logprobs, finish or "length", tokens, timing)

    def _report_call(self, submitted: float, timings: Sequence[SampleTiming | None]) -> None:
        """Tell `on_call_timed` how a call sent at `submitted` spent its time; a
        call with an untimed sample (a remote backend's) is not told of."""
        if self.on_call_timed is not None and timings and all(t is not None for t in timings):
            self.on_call_timed(call_timing(submitted, timings))


def _step(done: Delta, with_logprobs: bool) -> Step:
    """A `Policy` step from a whole sample (a stop string's finish is "step")."""
    finish = "step" if done.finish == "stop" else done.finish
    if not with_logprobs:
        return Step(done.text, done.num_tokens, finish, sum(done.token_logprobs))
    top = tuple(tuple(v for _, v in token.top) for token in done.tokens or ())
    return Step(done.text, done.num_tokens, finish, sum(done.token_logprobs), tuple(done.token_logprobs), top)


def _halts(monitor: TokenMonitor, delta: Delta) -> bool:
    """Whether `monitor` halts the sample at one of `delta`'s tokens (all are
    shown to it: the backend generated them, so they are counted)."""
    halted = False
    if delta.tokens is not None:
        for token in delta.tokens:
            halted = monitor(token.logprob, [v for _, v in token.top]) or halted
    else:
        for logprob in delta.token_logprobs:
            halted = monitor(logprob, ()) or halted
    return halted


class StopStringMatcher:
    """Finds stop strings in text that grows token by token, holding back a
    tail that could still become a stop string so streamed text never has to
    be taken back."""

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        self.holdback = max((len(s) for s in self.stop), default=1) - 1

    def find(self, text: str, search_from: int = 0) -> int | None:
        """Index where the earliest stop string starts, or None."""
        start = max(0, search_from - self.holdback)
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def stop_at(self, text: str, index: int) -> str:
        """The stop string that `find` found at `index` (the first listed, where two start there)."""
        return next(s for s in self.stop if text.startswith(s, index))

    def safe_length(self, text: str) -> int:
        """How much of `text` can be emitted while the sample is still running."""
        return max(0, len(text) - self.holdback) if self.stop else len(text)


class LocalTokenizerEngine(Engine):
    """An engine running in this process, with the checkpoint's HF tokenizer in `self.tokenizer`.

    Prompts are encoded once: a request's prompt is encoded when the server
    counts its tokens (a chat request's, once its template is rendered), and
    `prompt_ids` remembers the last PROMPT_CACHE_SIZE prompts' ids, so its n
    samples reuse them (on an AMD EPYC core an encode costs 25-60 us, a tenth
    of a small request's time in the server)."""

    tokenizer = None
    PROMPT_CACHE_SIZE = 256
    _prompt_cache: dict[str, tuple[int, ...]] | None = None

    async def prepare_chat(self, messages: list[dict]) -> PreparedPrompt:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return PreparedPrompt(text, len(self.prompt_ids(text)))

    def prompt_ids(self, text: str) -> tuple[int, ...]:
        """Token ids of a prompt (no special tokens added), from the cache when it was seen lately."""
        if self._prompt_cache is None:
            self._prompt_cache = {}
        ids = self._prompt_cache.pop(text, None)
        if ids is None:
            # the Rust tokenizer, without the wrapper's cost
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            ids = tuple(backend.encode(text, add_special_tokens=False).ids if backend is not None
                        else self.tokenizer.encode(text, add_special_tokens=False))
            if len(self._prompt_cache) >= self.PROMPT_CACHE_SIZE:
                del self._prompt_cache[next(iter(self._prompt_cache))]  # the least recently used
        self._prompt_cache[text] = ids
        return ids

    async def tokenize(self, text: str) -> list[int]:
        return list(self.prompt_ids(text))  # a text completion counts its prompt here; its samples reuse the ids

    async def detokenize(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)
