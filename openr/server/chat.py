"""Serving logic of `/v1/chat/completions` (plain generation).

Takes a validated `ChatCompletionRequest`, checks it against the model (name,
context length, server limits), runs `n` samples on the engine and answers as
one JSON body or as OpenAI's server-sent events.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from openr.engine.base import Delta, Engine
from openr.server.errors import APIError, bad_request, error_event
from openr.server.metrics import ServerMetrics
from openr.server.protocol import (
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice,
    DeltaMessage, SamplingFields, Usage, new_id, now,
)

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class ServingContext:
    """Everything a request handler needs; built once at start-up."""

    engine: Engine
    model_name: str
    metrics: ServerMetrics
    max_n: int
    prm: object | None = None  # a StepScorer, when the model comes with a PRM
    search_limits: object | None = None  # openr.server.search.SearchLimits


@dataclass
class Tally:
    """Per-request accounting shared by the streaming and non-streaming paths."""

    metrics: ServerMetrics
    prompt_tokens: int
    started: float = field(default_factory=time.perf_counter)
    completion_tokens: int = 0
    first_token_seen: bool = False

    def add(self, delta: Delta) -> None:
        if delta.num_tokens and not self.first_token_seen:
            self.first_token_seen = True
            self.metrics.ttft.labels(self.metrics.model_name).observe(time.perf_counter() - self.started)
        self.completion_tokens += delta.num_tokens

    def finish(self, finish_reasons: list[str]) -> None:
        """Count one finished request; its reason is `length` if any choice was cut short."""
        name = self.metrics.model_name
        self.metrics.e2e_latency.labels(name).observe(time.perf_counter() - self.started)
        self.metrics.prompt_tokens.labels(name).inc(self.prompt_tokens)
        self.metrics.generation_tokens.labels(name).inc(self.completion_tokens)
        reason = "length" if "length" in finish_reasons else "stop"
        self.metrics.request_success.labels(name, reason).inc()


def check_model(ctx: ServingContext, model: str | None) -> None:
    if model is not None and model != ctx.model_name:
        raise APIError(404, f"The model `{model}` does not exist. This server serves `{ctx.model_name}`.",
                       param="model", code="model_not_found")


def check_n(ctx: ServingContext, request: SamplingFields) -> None:
    if request.n > ctx.max_n:
        raise bad_request(f"n: at most {ctx.max_n} choices per request on this server (got {request.n})", "n")


def resolve_max_tokens(ctx: ServingContext, prompt_tokens: int, requested: int | None, param: str) -> int:
    """Default to the rest of the context, as vLLM does; reject what cannot fit."""
    room = ctx.engine.max_model_len - prompt_tokens
    if requested is None:
        if room < 1:
            raise bad_request(f"This model's maximum context length is {ctx.engine.max_model_len} tokens, "
                              f"but the messages take {prompt_tokens}.", "messages", "context_length_exceeded")
        return room
    if requested > room:
        raise bad_request(f"This model's maximum context length is {ctx.engine.max_model_len} tokens. "
                          f"However, you requested {prompt_tokens + requested} tokens ({prompt_tokens} in the "
                          f"messages, {requested} in the completion).", param, "context_length_exceeded")
    return requested


async def create_chat_completion(ctx: ServingContext, request: ChatCompletionRequest):
    """Return a `ChatCompletion`, or an async iterator of SSE lines when streaming."""
    from openr.server.search import create_search_completion, wants_search

    if wants_search(request):
        return await create_search_completion(ctx, request, ctx.search_limits)
    check_model(ctx, request.model)
    check_n(ctx, request)
    try:
        prompt = await ctx.engine.prepare_chat(request.chat_messages())
    except APIError:
        raise
    except Exception as exc:  # chat templates raise on message orders they do not support
        raise bad_request(f"messages: the model's chat template rejected them: {exc}", "messages") from exc
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = resolve_max_tokens(ctx, prompt.num_tokens, request.requested_max_tokens(), param)
    configs = [request.to_sampling_config(max_tokens, i) for i in range(request.n)]
    tally = Tally(ctx.metrics, prompt.num_tokens)
    samples = ctx.engine.stream_many(prompt.text, configs)
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return _stream_chunks(ctx, samples, request.n, tally, include_usage)
    return await _collect(ctx, samples, request.n, tally)


async def _collect(ctx: ServingContext, samples: AsyncIterator[tuple[int, Delta]], n: int,
                   tally: Tally) -> ChatCompletion:
    texts: list[list[str]] = [[] for _ in range(n)]
    finishes = ["length"] * n
    async for index, delta in samples:
        tally.add(delta)
        texts[index].append(delta.text)
        if delta.finish:
            finishes[index] = FINISH_REASONS[delta.finish]
    tally.finish(finishes)
    choices = [ChatChoice(index=i, message=AssistantMessage(content="".join(texts[i])), finish_reason=finishes[i])
               for i in range(n)]
    return ChatCompletion(id=new_id("chatcmpl"), created=now(), model=ctx.model_name, choices=choices,
                          usage=Usage.of(tally.prompt_tokens, tally.completion_tokens))


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def sse_stream(payloads: AsyncIterator[dict], samples: AsyncIterator) -> AsyncIterator[str]:
    """Server-sent events for a stream of chunk payloads, ending in `[DONE]`.
    A failure after the headers went out is reported in-band, as vLLM does;
    however the stream ends, the engine samples behind it are closed."""
    try:
        async for payload in payloads:
            yield sse(payload)
    except Exception as exc:
        yield sse(error_event(exc))
    finally:
        await samples.aclose()
    yield "data: [DONE]\n\n"


def _stream_chunks(ctx: ServingContext, samples: AsyncIterator[tuple[int, Delta]], n: int, tally: Tally,
                   include_usage: bool) -> AsyncIterator[str]:
    chunk_id, created = new_id("chatcmpl"), now()

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> dict:
        return ChatCompletionChunk(id=chunk_id, created=created, model=ctx.model_name, choices=choices,
                                   usage=usage).model_dump()

    async def payloads():
        finishes = ["length"] * n
        for i in range(n):
            yield chunk([ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
        async for index, delta in samples:
            tally.add(delta)
            if delta.finish:
                finishes[index] = FINISH_REASONS[delta.finish]
            elif not delta.text:
                continue
            reason = finishes[index] if delta.finish else None
            yield chunk([ChunkChoice(index=index, delta=DeltaMessage(content=delta.text), finish_reason=reason)])
        tally.finish(finishes)
        if include_usage:
            yield chunk([], Usage.of(tally.prompt_tokens, tally.completion_tokens))

    return sse_stream(payloads(), samples)
