"""Serving logic of a chat completion that asks for search (`extra_body.search`
or `reasoning_effort`): have `openr.search` parse the knobs, hold them to the
server's limits, run the
strategy on the engine and the micro-batched PRM, and answer in OpenAI's shape.

Usage: `completion_tokens` is every token the search generated;
`completion_tokens_details.reasoning_tokens` the part not in the returned choices.
Each search runs in a session of its own (`openr.session`), whose key its calls
to remote backends carry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import AsyncIterator

from openr.search import (
    SearchConfigError,
    SearchPlan,
    SearchProblem,
    SearchResult,
    effort_preset,
    parse_search,
    run_strategy,
)
from openr.server.base import (
    ServingContext,
    Tally,
    check_model,
    check_n,
    check_prompt_fits,
    render_prompt,
    sse_stream,
)
from openr.server.errors import bad_request
from openr.server.protocol import ChatCompletionRequest
from openr.server.responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    DeltaMessage,
    Usage,
    new_id,
    now,
)
from openr.server.settings import SearchLimits
from openr.session import search_session
from openr.tasks.grading import extract_answer

PROGRESS_INTERVAL_S = 1.0  # how often a streamed search reports progress

SAMPLING_DEFAULTS = ("temperature", "top_p", "seed")  # top-level knobs a search takes as defaults


def wants_search(request: ChatCompletionRequest) -> bool:
    return request.search is not None or request.reasoning_effort is not None


def plan_search(ctx: ServingContext, request: ChatCompletionRequest) -> SearchPlan:
    """The request's search, parsed by `openr.search` and held to this server's
    limits; every problem is a 400 naming `search.<field>`, raised before any sampling."""
    limits = ctx.settings.search
    options = effort_preset(request.reasoning_effort, ctx.prm is not None) if request.reasoning_effort else {}
    if (request.search or {}).get("strategy") == "auto":  # auto turns the effort into its own budget level
        options = {"effort": request.reasoning_effort} if request.reasoning_effort else {}
    options.update(request.search or {})
    for key in SAMPLING_DEFAULTS:  # a top-level knob the client set is the search's, unless search sets it
        if key in request.model_fields_set and key not in (request.search or {}):
            options[key] = getattr(request, key)
    try:
        plan = parse_search(options, default_strategy=limits.default_strategy if ctx.prm is not None else
                            "majority_vote", default_max_tokens_total=_default_tokens(request, limits),
                            default_timeout_s=limits.default_timeout_s, auto_table=limits.auto_table,
                            defaults=limits.search_defaults)
    except SearchConfigError as exc:
        raise bad_request(str(exc), f"search.{exc.field}") from exc
    except TypeError as exc:  # a value of a type no check expected (e.g. a list where a name goes)
        raise bad_request(f"search: {exc}", "search") from exc
    _check_limits(plan, limits)
    if plan.config.needs_prm and ctx.prm is None:
        raise bad_request(f"strategy {plan.strategy} (with these options) needs a process reward model, and "
                          f"`{ctx.model_name}` has none attached; use majority_vote, cot or best_of_n with "
                          "aggregation majority_vote, or serve a model with a PRM (--prm)", "search.strategy",
                          "prm_unavailable")
    return plan


def _check_limits(plan: SearchPlan, limits: SearchLimits) -> None:
    """This server's ceilings, on the parsed (typed) plan."""
    if plan.config.samples > limits.max_samples:
        raise bad_request(f"search asks for {plan.config.samples} samples; this server allows at most "
                          f"{limits.max_samples}", "search.n")
    tokens = plan.budget.max_tokens_total
    if tokens is not None and tokens > limits.max_tokens_total:
        raise bad_request(f"search.max_tokens_total: this server allows at most {limits.max_tokens_total} "
                          f"tokens per search, got {tokens}", "search.max_tokens_total")
    seconds = plan.budget.max_seconds
    if seconds is not None and seconds > limits.max_timeout_s:
        raise bad_request(f"search.timeout_s: this server allows at most {limits.max_timeout_s} seconds, "
                          f"got {seconds}", "search.timeout_s")


def _default_tokens(request: ChatCompletionRequest, limits: SearchLimits) -> int:
    # As with OpenAI's reasoning models, max_completion_tokens bounds the visible
    # answer plus the reasoning behind it: here, every token the search generates.
    requested = request.requested_max_tokens()
    return min(requested, limits.max_tokens_total) if requested else limits.max_tokens_total


async def create_search_completion(ctx: ServingContext, request: ChatCompletionRequest):
    """A `ChatCompletion` chosen by search, or an async iterator of SSE lines when streaming."""
    with search_session(ctx.settings.session_header):  # a streamed search's task copies it when it starts
        return await _search_completion(ctx, request)


async def _search_completion(ctx: ServingContext, request: ChatCompletionRequest):
    check_model(ctx, request.model)
    check_n(ctx, request)
    plan = plan_search(ctx, request)
    messages = request.chat_messages()
    prompt = await render_prompt(ctx, messages)
    check_prompt_fits(ctx, prompt.num_tokens)  # else every sample would end at once, empty
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
    problem = SearchProblem(question=question, prompt=prompt.text, extract_answer=extract_answer,
                            step_separator=ctx.settings.step_separator)
    tally = Tally(ctx.metrics, prompt.num_tokens)

    async def search() -> SearchResult:
        try:
            result = await run_strategy(plan.strategy, problem, ctx.engine, ctx.prm, plan.config, plan.budget)
        except asyncio.CancelledError:
            ctx.metrics.searches.labels(ctx.model_name, plan.strategy, "cancelled").inc()
            raise
        if not result.candidates and result.stop_reason == "context":
            raise bad_request("no solution to this prompt fits the PRM's context: shorten the messages",
                              "messages", "context_length_exceeded")
        _record(ctx, plan.strategy, result, tally)
        return result

    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return _stream(ctx, plan, request.n, prompt.num_tokens, asyncio.ensure_future(search()), include_usage)
    result = await search()
    choices, usage = _choices(result, request.n, prompt.num_tokens)
    body = ChatCompletion(id=new_id("chatcmpl"), created=now(), model=ctx.model_name, choices=choices, usage=usage)
    if plan.return_trace:
        body.search_trace = trace_of(plan.strategy, result)
        if plan.defaults:  # what the model's search defaults chose for this request
            body.search_trace["defaults"] = plan.defaults
    return body


def _choices(result: SearchResult, n: int, prompt_tokens: int) -> tuple[list[ChatChoice], Usage]:
    chosen = result.top_answers(n) or list(result.candidates[:1])
    choices = [ChatChoice(index=i, message=AssistantMessage(content=c.text),
                          finish_reason=result.finish_reason if i == 0 else ("stop" if c.finished else "length"))
               for i, c in enumerate(chosen)]
    if not choices:  # a budget ran out before any candidate: an empty answer, cut short
        choices = [ChatChoice(index=0, message=AssistantMessage(content=""), finish_reason="length")]
    visible = sum(c.tokens for c in chosen)
    usage = Usage.of(prompt_tokens, result.tokens_generated, max(0, result.tokens_generated - visible))
    return choices, usage


def trace_of(strategy: str, result: SearchResult) -> dict:
    return {
        "strategy": strategy, "stop_reason": result.stop_reason, "tokens_generated": result.tokens_generated,
        "prm_calls": result.prm_calls, **result.decisions,
        "timing": {**dataclasses.asdict(result.timing), "other_seconds": result.timing.other_seconds},
        "candidates": [{"steps": list(c.steps), "step_scores": list(c.step_scores),
                        "aggregate_score": c.aggregate_score, "tokens": c.tokens, "finished": c.finished,
                        "answer": c.answer} for c in result.candidates],
    }


def _record(ctx: ServingContext, strategy: str, result: SearchResult, tally: Tally) -> None:
    name, m = ctx.model_name, ctx.metrics
    m.searches.labels(name, strategy, result.stop_reason or "completed").inc()
    m.search_latency.labels(name, strategy).observe(time.perf_counter() - tally.started)
    m.search_tokens.labels(name, strategy).observe(result.tokens_generated)
    m.search_policy_wait.labels(name, strategy).observe(result.timing.policy_seconds)
    m.search_prm_wait.labels(name, strategy).observe(result.timing.prm_seconds)
    halted = result.decisions.get("deepconf", {}).get("halted", 0)
    if halted:
        m.search_samples_halted.labels(name, strategy).inc(halted)
    tally.completion_tokens = result.tokens_generated
    tally.finish([result.finish_reason])


def _stream(ctx: ServingContext, plan: SearchPlan, n: int, prompt_tokens: int, task: asyncio.Future,
            include_usage: bool) -> AsyncIterator[str]:
    """Progress in `delta.reasoning_content` while the search runs (as reasoning
    models on vLLM stream their thinking), then the answer, usage and [DONE]."""
    chunk_id, created = new_id("chatcmpl"), now()

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> dict:
        return ChatCompletionChunk(id=chunk_id, created=created, model=ctx.model_name, choices=choices,
                                   usage=usage).model_dump(exclude_none=True)

    async def payloads():
        yield chunk([ChunkChoice(index=0, delta=DeltaMessage(role="assistant", content=""))])
        while not task.done():
            await asyncio.wait({task}, timeout=PROGRESS_INTERVAL_S)
            if not task.done():
                own = f", {plan.budget.note}" if plan.budget.note else ""
                note = (f"{plan.strategy}: {plan.budget.tokens_generated} tokens generated, "
                        f"{plan.budget.prm_calls} PRM calls{own}\n")
                yield chunk([ChunkChoice(index=0, delta=DeltaMessage(reasoning_content=note))])
        choices, usage = _choices(task.result(), n, prompt_tokens)
        for choice in choices:
            delta = DeltaMessage(role="assistant" if choice.index else None, content=choice.message.content)
            yield chunk([ChunkChoice(index=choice.index, delta=delta, finish_reason=choice.finish_reason)])
        if include_usage:
            yield chunk([], usage)

    return sse_stream(payloads(), _Cancel(task))


class _Cancel:
    """Lets `sse_stream` stop the search the way it closes engine samples."""

    def __init__(self, task: asyncio.Future):
        self.task = task

    async def aclose(self) -> None:
        if not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
