"""OpenAI wire types of responses: completions, chunks, usage, log-probabilities
and model cards. Requests are in `protocol.py`."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> "Usage":
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens,
                   completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning_tokens))


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


LOGPROB_FLOOR = -9999.0  # what vLLM reports for an impossible token: JSON has no -inf


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None

    @classmethod
    def of(cls, token: str, logprob: float, **extra) -> "TopLogprob":
        return cls(token=token, logprob=max(logprob, LOGPROB_FLOOR), bytes=list(token.encode()), **extra)


class ContentLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """OpenAI's `choices[i].logprobs` of a chat completion (or one chunk's share)."""

    content: list[ContentLogprob] | None
    refusal: None = None

    @classmethod
    def of(cls, tokens) -> "ChoiceLogprobs":
        """From the engine's `TokenLogprob`s."""
        return cls(content=[ContentLogprob.of(t.token, t.logprob, top_logprobs=[TopLogprob.of(a, v) for a, v in t.top])
                            for t in tokens])


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str
    stop_reason: str | None = None  # vLLM's extension: the stop string that ended it (None: eos, length)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    # our extension: candidates, step scores and token counts, with search.return_trace
    search_trace: dict[str, Any] | None = Field(default=None, exclude_if=lambda value: value is None)


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = Field(default=None, exclude_if=lambda value: value is None)  # search progress


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: str | None = None  # vLLM's extension, on the choice's last chunk


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    """`/v1/completions`' `choices[i].logprobs`, in vLLM's shape: per token its text,
    log-probability, a dict of the sampled token and its alternatives, and
    where its text starts in the choice's text."""

    token_logprobs: list[float]
    tokens: list[str] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] | None = None

    @classmethod
    def of(cls, values: list[float], tokens: list | None, offset: int = 0) -> "CompletionLogprobs":
        """From the engine's log-probabilities and, when it reports them, its
        `TokenLogprob`s (`offset`: where the first one starts). A token the engine
        counts but does not show, the end-of-text token at the end, is the
        empty string with its alternatives not given (None, as vLLM gives a
        position without them); values without `tokens` (an engine that reports
        no token texts), the values alone."""
        values = [max(v, LOGPROB_FLOOR) for v in values]
        if tokens is None and values:
            return cls(token_logprobs=values)
        tokens = tokens or []
        texts, tops, offsets = [], [], []
        for token in tokens:
            ranked = {token.token: max(token.logprob, LOGPROB_FLOOR)}  # the sampled token first, as vLLM
            for text, value in token.top:
                ranked.setdefault(text, max(value, LOGPROB_FLOOR))
            texts.append(token.token)
            tops.append(ranked)
            offsets.append(offset)
            offset += len(token.token)
        unshown = len(values) - len(tokens)
        return cls(token_logprobs=values, tokens=texts + [""] * unshown, top_logprobs=tops + [None] * unshown,
                   text_offset=offsets + [offset] * unshown)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    # vLLM's extension: the stop string that ended it, None at eos or length, so a
    # front (`--engine openai`) tells a step's end from the solution's, as on vLLM
    stop_reason: str | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class RewardResponse(BaseModel):
    object: Literal["rewards"] = "rewards"
    model: str
    scores: list[list[float]]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "openr"
    root: str | None = None
    max_model_len: int | None = None
    prm: str | None = None  # our extension: the attached process reward model, if any


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
