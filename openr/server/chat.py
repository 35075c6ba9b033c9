"""Serving logic of `/v1/chat/completions` (plain generation).

Takes a validated `ChatCompletionRequest`, checks it against the model (name,
context length, server limits), runs `n` samples on the engine and answers as
one JSON body or as OpenAI's server-sent events. A request that asks for
search is handed to `chat_search`.
"""

from __future__ import annotations

from typing import AsyncIterator

from openr.engine.base import Delta
from openr.server.base import (
    FINISH_REASONS,
    ServingContext,
    Tally,
    check_model,
    check_n,
    render_prompt,
    resolve_max_tokens,
    sse_stream,
)
from openr.server.chat_search import create_search_completion, wants_search
from openr.server.protocol import ChatCompletionRequest
from openr.server.refusals import check_chat_fields
from openr.server.responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaMessage,
    Usage,
    new_id,
    now,
)


async def create_chat_completion(ctx: ServingContext, request: ChatCompletionRequest):
    """Return a `ChatCompletion`, or an async iterator of SSE lines when streaming."""
    search = wants_search(request)
    check_chat_fields(request, ctx.engine, search)
    if search:
        return await create_search_completion(ctx, request)
    check_model(ctx, request.model)
    check_n(ctx, request)
    prompt = await render_prompt(ctx, request.chat_messages())
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = resolve_max_tokens(ctx, prompt.num_tokens, request.requested_max_tokens(), param)
    configs = [request.to_sampling_config(max_tokens, i) for i in range(request.n)]
    tally = Tally(ctx.metrics, prompt.num_tokens)
    samples = ctx.engine.stream_many(prompt.text, configs)
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return _stream_chunks(ctx, samples, request.n, tally, include_usage, request.logprobs)
    return await _collect(ctx, samples, request.n, tally, request.logprobs)


async def _collect(ctx: ServingContext, samples: AsyncIterator[tuple[int, Delta]], n: int,
                   tally: Tally, logprobs: bool) -> ChatCompletion:
    texts: list[list[str]] = [[] for _ in range(n)]
    tokens: list[list] = [[] for _ in range(n)]
    finishes = ["length"] * n
    stop_reasons: list[str | None] = [None] * n
    async for index, delta in samples:
        tally.add(delta)
        texts[index].append(delta.text)
        tokens[index].extend(delta.tokens or [])
        if delta.finish:
            finishes[index], stop_reasons[index] = FINISH_REASONS[delta.finish], delta.stop_reason
    tally.finish(finishes)
    choices = [ChatChoice(index=i, message=AssistantMessage(content="".join(texts[i])), finish_reason=finishes[i],
                          stop_reason=stop_reasons[i], logprobs=ChoiceLogprobs.of(tokens[i]) if logprobs else None)
               for i in range(n)]
    return ChatCompletion(id=new_id("chatcmpl"), created=now(), model=ctx.model_name, choices=choices,
                          usage=Usage.of(tally.prompt_tokens, tally.completion_tokens))


def _stream_chunks(ctx: ServingContext, samples: AsyncIterator[tuple[int, Delta]], n: int, tally: Tally,
                   include_usage: bool, logprobs: bool) -> AsyncIterator[str]:
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
            elif not delta.text and not delta.tokens:
                continue
            reason = finishes[index] if delta.finish else None
            yield chunk([ChunkChoice(index=index, delta=DeltaMessage(content=delta.text), finish_reason=reason,
                                     stop_reason=delta.stop_reason,
                                     logprobs=ChoiceLogprobs.of(delta.tokens or []) if logprobs else None)])
        tally.finish(finishes)
        if include_usage:
            yield chunk([], Usage.of(tally.prompt_tokens, tally.completion_tokens))

    return sse_stream(payloads(), samples)
