"""Serving logic of `/v1/completions`, `/tokenize` and `/detokenize`.

These raw-prompt endpoints (shaped as vLLM's) let one `openr serve` use another
as its generation backend (`--engine openai`), so the remote engine can
continue a partial reasoning trace exactly where a search left it.
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
from openr.server.errors import bad_request
from openr.server.protocol import CompletionRequest, DetokenizeRequest, TokenizeRequest
from openr.server.refusals import check_completion_fields, check_sampling_fields
from openr.server.responses import Completion, CompletionChoice, CompletionLogprobs, Usage, new_id, now


async def create_completion(ctx: ServingContext, request: CompletionRequest):
    """Return a `Completion`, or an async iterator of SSE lines when streaming."""
    check_model(ctx, request.model)
    check_n(ctx, request)
    check_sampling_fields(request, ctx.engine)
    check_completion_fields(request, ctx.engine)
    prompt_tokens = len(await ctx.engine.tokenize(request.prompt))
    if not prompt_tokens:
        raise bad_request("prompt: it is empty (no tokens); there is nothing to generate from", "prompt")
    max_tokens = resolve_max_tokens(ctx, prompt_tokens, request.max_tokens, "max_tokens")
    configs = [request.to_sampling_config(max_tokens, i) for i in range(request.n)]
    tally = Tally(ctx.metrics, prompt_tokens)
    samples = ctx.engine.stream_many(request.prompt, configs)
    want_logprobs = request.logprobs is not None
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return _stream(ctx, samples, tally, want_logprobs, include_usage)
    texts: list[list[str]] = [[] for _ in range(request.n)]
    logprobs: list[list[float]] = [[] for _ in range(request.n)]
    tokens: list[list | None] = [None] * request.n
    finishes = ["length"] * request.n
    stop_reasons: list[str | None] = [None] * request.n
    async for index, delta in samples:
        tally.add(delta)
        texts[index].append(delta.text)
        logprobs[index].extend(delta.token_logprobs)
        if delta.tokens is not None:
            tokens[index] = (tokens[index] or []) + delta.tokens
        if delta.finish:
            finishes[index], stop_reasons[index] = FINISH_REASONS[delta.finish], delta.stop_reason
    tally.finish(finishes)
    choices = [
        CompletionChoice(index=i, text="".join(texts[i]), finish_reason=finishes[i], stop_reason=stop_reasons[i],
                         logprobs=CompletionLogprobs.of(logprobs[i], tokens[i]) if want_logprobs else None)
        for i in range(request.n)
    ]
    return Completion(id=new_id("cmpl"), created=now(), model=ctx.model_name, choices=choices,
                      usage=Usage.of(tally.prompt_tokens, tally.completion_tokens))


def _stream(ctx: ServingContext, samples: AsyncIterator[tuple[int, Delta]], tally: Tally,
            want_logprobs: bool, include_usage: bool) -> AsyncIterator[str]:
    chunk_id, created = new_id("cmpl"), now()

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> dict:
        return Completion(id=chunk_id, created=created, model=ctx.model_name, choices=choices,
                          usage=usage).model_dump()

    async def payloads():
        finishes: dict[int, str] = {}
        offsets: dict[int, int] = {}  # where each choice's next token starts in its text
        async for index, delta in samples:
            tally.add(delta)
            if delta.finish:
                finishes[index] = FINISH_REASONS[delta.finish]
            elif not delta.text and not delta.token_logprobs:
                continue
            logprobs = None
            if want_logprobs:
                logprobs = CompletionLogprobs.of(delta.token_logprobs, delta.tokens, offsets.get(index, 0))
                offsets[index] = offsets.get(index, 0) + sum(len(t.token) for t in delta.tokens or ())
            yield chunk([CompletionChoice(index=index, text=delta.text, logprobs=logprobs,
                                          finish_reason=finishes.get(index), stop_reason=delta.stop_reason)])
        tally.finish(list(finishes.values()))
        if include_usage:
            yield chunk([], Usage.of(tally.prompt_tokens, tally.completion_tokens))

    return sse_stream(payloads(), samples)


async def tokenize(ctx: ServingContext, request: TokenizeRequest) -> dict:
    check_model(ctx, request.model)
    if (request.prompt is None) == (request.messages is None):
        raise bad_request("give exactly one of `prompt` and `messages`", "prompt")
    if request.messages is not None:
        prompt = await render_prompt(ctx, [{"role": m.role, "content": m.text()} for m in request.messages])
        text = prompt.text
    else:
        text = request.prompt
    tokens = await ctx.engine.tokenize(text)
    return {"count": len(tokens), "max_model_len": ctx.engine.max_model_len, "tokens": tokens}


async def detokenize(ctx: ServingContext, request: DetokenizeRequest) -> dict:
    check_model(ctx, request.model)
    vocab = getattr(ctx.engine, "vocab_size", None)
    for i, token in enumerate(request.tokens):
        if token < 0 or (vocab and token >= vocab):
            limit = f"ids 0..{vocab - 1}" if vocab else "ids are not negative"
            raise bad_request(f"tokens.{i}: token id {token} is outside the vocabulary ({limit})", f"tokens.{i}")
    return {"prompt": await ctx.engine.detokenize(request.tokens)}
