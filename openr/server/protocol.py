"""OpenAI wire types: requests (validated on arrival) and responses.

Fields follow the order of OpenAI's API reference; our own extensions are
fenced off at the end of each request. Requests convert themselves into engine
terms (`to_sampling_config`), so the serving logic never handles pydantic.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openr.contracts import MAX_TEMPERATURE
from openr.engine.base import SamplingConfig

MAX_STOP_SEQUENCES = 4  # OpenAI's limit


class OpenAIModel(BaseModel):
    # Unknown fields are accepted, logged and ignored, as vLLM does.
    model_config = ConfigDict(extra="allow")

    def ignored_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class SamplingFields(OpenAIModel):
    """Fields shared by chat and text completions."""

    n: int = Field(1, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value):
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def to_sampling_config(self, max_tokens: int, index: int = 0) -> SamplingConfig:
        # With a seed, choice i uses seed + i: reproducible, yet the n choices differ.
        seed = None if self.seed is None else self.seed + index
        return SamplingConfig(max_tokens, self.temperature, self.top_p, self.stop_strings(), seed)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    # -- our extension (OpenAI SDK: extra_body={"search": {...}}): the search
    # strategy and its knobs, parsed by openr.search.parse_search.
    search: dict[str, Any] | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def chat_messages(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(SamplingFields):
    """`/v1/completions`: a raw prompt. Lets another `openr serve` (or any
    OpenAI-compatible client) use this server as its generation backend."""

    model: str | None = None
    prompt: str
    max_tokens: int = Field(16, ge=1)
    # Only the sampled token's log-probability (0) is supported, not alternatives.
    logprobs: int | None = Field(None, ge=0, le=0)
    # -- vLLM extensions, accepted so vLLM clients (and `--engine openai`) work
    # unchanged. Prompts are always used exactly as given (no BOS is added) and
    # special tokens are never emitted, so both must stay at these values.
    add_special_tokens: Literal[False] = False
    skip_special_tokens: Literal[True] = True


class TokenizeRequest(OpenAIModel):
    """vLLM's `/tokenize`: either a prompt or chat messages."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: Literal[True] = True
    add_special_tokens: Literal[False] = False  # as in CompletionRequest


class DetokenizeRequest(OpenAIModel):
    model: str | None = None
    tokens: list[int]


MAX_REWARD_CANDIDATES = 64
MAX_STEPS_PER_CANDIDATE = 64


class RewardRequest(OpenAIModel):
    """Our `/v1/rewards`: the attached PRM's score for every step of each candidate."""

    model: str | None = None
    question: str = Field(min_length=1)
    candidates: list[list[str]] = Field(min_length=1, max_length=MAX_REWARD_CANDIDATES)

    @field_validator("candidates")
    @classmethod
    def _check_steps(cls, value):
        for steps in value:
            if not steps or len(steps) > MAX_STEPS_PER_CANDIDATE:
                raise ValueError(f"each candidate needs 1 to {MAX_STEPS_PER_CANDIDATE} steps")
        return value


# ---- responses -------------------------------------------------------------


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


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


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
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    token_logprobs: list[float]
    tokens: list[str] | None = None
    top_logprobs: None = None
    text_offset: list[int] | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


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


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_none=False)
