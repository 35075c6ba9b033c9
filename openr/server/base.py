"""The serving base every endpoint shares: the request context, per-request
accounting, the checks common to all generation requests, and server-sent events.

Endpoint modules (`chat`, `chat_search`, `completions`, `rewards`) import what
they share from here; the only edge between them is `chat` handing a request
that asks for search to `chat_search`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from openr.contracts import StepScorer
from openr.engine.base import Delta, Engine, PreparedPrompt
from openr.server.errors import APIError, bad_request, error_event
from openr.server.metrics import ServerMetrics
from openr.server.protocol import SamplingFields
from openr.server.settings import ServerSettings

# Engine finish reasons -> OpenAI's.
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class ServingContext:
    """Everything a request handler needs; built once at start-up."""

    engine: Engine
    model_name: str
    metrics: ServerMetrics
    settings: ServerSettings
    prm: StepScorer | None = None  # set once the PRM loads, when the model comes with one


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
            self.metrics.first_token(time.perf_counter() - self.started)
        self.completion_tokens += delta.num_tokens

    def finish(self, finish_reasons: list[str]) -> None:
        """Count one finished request; its reason is `length` if any choice was cut short."""
        reason = "length" if "length" in finish_reasons else "stop"
        self.metrics.request_done(time.perf_counter() - self.started, self.prompt_tokens, self.completion_tokens,
                                  reason)


def check_model(ctx: ServingContext, model: str | None) -> None:
    if model is not None and model != ctx.model_name:
        raise APIError(404, f"The model `{model}` does not exist. This server serves `{ctx.model_name}`.",
                       param="model", code="model_not_found")


def check_n(ctx: ServingContext, request: SamplingFields) -> None:
    if request.n > ctx.settings.max_n:
        raise bad_request(f"n: at most {ctx.settings.max_n} choices per request on this server (got {request.n})", "n")


async def render_prompt(ctx: ServingContext, messages: list[dict]) -> PreparedPrompt:
    """The messages through the model's chat template; a template's refusal is the client's 400."""
    try:
        return await ctx.engine.prepare_chat(messages)
    except APIError:
        raise
    except Exception as exc:  # chat templates raise on message orders they do not support
        raise bad_request(f"messages: the model's chat template rejected them: {exc}", "messages") from exc


def check_prompt_fits(ctx: ServingContext, prompt_tokens: int) -> None:
    """Refuse a prompt that leaves no room in the context for a single token."""
    if ctx.engine.max_model_len - prompt_tokens < 1:
        raise bad_request(f"This model's maximum context length is {ctx.engine.max_model_len} tokens, "
                          f"but the messages take {prompt_tokens}.", "messages", "context_length_exceeded")


def resolve_max_tokens(ctx: ServingContext, prompt_tokens: int, requested: int | None, param: str) -> int:
    """Default to the rest of the context, as vLLM does; reject what cannot fit."""
    room = ctx.engine.max_model_len - prompt_tokens
    if requested is None:
        check_prompt_fits(ctx, prompt_tokens)
        return room
    if requested > room:
        raise bad_request(f"This model's maximum context length is {ctx.engine.max_model_len} tokens. "
                          f"However, you requested {prompt_tokens + requested} tokens ({prompt_tokens} in the "
                          f"messages, {requested} in the completion).", param, "context_length_exceeded")
    return requested


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
