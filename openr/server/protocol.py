"""OpenAI wire types of requests, validated on arrival (responses: `responses.py`).

Fields follow the order of OpenAI's API reference; our own extensions are
fenced off at the end of each request. Requests convert themselves into engine
terms (`to_sampling_config`), so the serving logic never handles pydantic.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from openr.contracts import MAX_TEMPERATURE
from openr.engine.base import SamplingConfig
from openr.search import EFFORTS

MAX_STOP_SEQUENCES = 4  # OpenAI's limit
PENALTY_LIMIT = 2.0  # OpenAI: presence and frequency penalties lie in [-2, 2]
LOGIT_BIAS_LIMIT = 100.0  # OpenAI: each bias lies in [-100, 100]
MAX_LOGIT_BIAS = 300  # OpenAI's limit on entries
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
# Extension fields vllm-router (0.1.17) writes into every completions and chat
# body it forwards, at these values, whether or not the client sent them (its
# request types serialise every field): at these values they ask for nothing,
# so they are not logged as ignored. Other values are, as any unknown field.
ROUTER_DEFAULTS = {"no_stop_trim": False, "return_hidden_states": False, "continue_final_message": False,
                   "include_reasoning": True, "separate_reasoning": True, "stream_reasoning": True}


class OpenAIModel(BaseModel):
    # Unknown fields are accepted, logged and ignored, as vLLM does. Known ones
    # are strict: `"stream": "yes"` is a 400, not True.
    model_config = ConfigDict(extra="allow", strict=True)

    def ignored_fields(self) -> list[str]:
        """Unknown fields that ask for something: one at the value a router writes
        into every body it forwards (`ROUTER_DEFAULTS`) asks for nothing."""
        extra = self.model_extra or {}
        return sorted(k for k, v in extra.items() if k not in ROUTER_DEFAULTS or v != ROUTER_DEFAULTS[k])


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # Required: only an assistant message with tool calls may omit it, and tools are refused.
    content: str | list[TextPart]
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
    presence_penalty: float = Field(0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT)
    frequency_penalty: float = Field(0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # -- vLLM's extension: keep sampling past the end-of-text token, to max_tokens
    # or a stop string (benchmarks use it to fix output lengths).
    ignore_eos: bool = False

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value):
        if value is None:
            return value
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries are allowed")
        for token, bias in value.items():
            if not token.isdigit():
                raise ValueError(f"keys are token ids written as strings, got {token!r}")
            if not -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT:
                raise ValueError(f"biases lie in [-{LOGIT_BIAS_LIMIT:g}, {LOGIT_BIAS_LIMIT:g}], got {bias} "
                                 f"for token {token}")
        return value

    def bias_table(self) -> tuple[tuple[int, float], ...]:
        return tuple(sorted((int(token), bias) for token, bias in (self.logit_bias or {}).items()))

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

    def wanted_top_logprobs(self) -> int | None:
        """How many alternatives to report per token; None: no logprobs asked for."""
        return None

    def to_sampling_config(self, max_tokens: int, index: int = 0) -> SamplingConfig:
        # With a seed, choice i uses seed + i: reproducible, yet the n choices differ.
        seed = None if self.seed is None else self.seed + index
        return SamplingConfig(max_tokens, self.temperature, self.top_p, self.stop_strings(), seed,
                              self.presence_penalty, self.frequency_penalty, self.bias_table(),
                              self.wanted_top_logprobs(), stream=self.stream, ignore_eos=self.ignore_eos)


class JSONSchemaFormat(OpenAIModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only then")
        return self


class FunctionSpec(OpenAIModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(OpenAIModel):
    type: Literal["function"]
    function: FunctionSpec


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    reasoning_effort: Literal[EFFORTS] | None = None  # type: ignore[valid-type]  # openr.search owns the levels
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    # Validated for shape, then refused or accepted by openr.server.refusals:
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionSpec] | None = None
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # -- our extension (OpenAI SDK: extra_body={"search": {...}}): the search
    # strategy and its knobs, parsed by openr.search.parse_search.
    search: dict[str, Any] | None = None

    def wanted_top_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def to_sampling_config(self, max_tokens: int, index: int = 0) -> SamplingConfig:
        config = super().to_sampling_config(max_tokens, index)
        form = self.response_format
        if form is None or form.type == "text":
            return config
        if form.type == "json_object":
            return dataclasses.replace(config, json_object=True)
        schema = form.json_schema.schema_ if form.json_schema.schema_ is not None else {"type": "object"}
        return dataclasses.replace(config, json_schema=json.dumps(schema))

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def chat_messages(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(SamplingFields):
    """`/v1/completions`: a raw prompt. Lets another `openr serve` (or any
    OpenAI-compatible client) use this server as its generation backend."""

    model: str | None = None
    prompt: str
    best_of: int | None = Field(None, ge=1)
    echo: bool = False
    max_tokens: int = Field(16, ge=1)
    # Each token's log-probability and text, with this many alternatives (vLLM's shape).
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    suffix: str | None = None
    # -- vLLM extensions, accepted so vLLM clients (and `--engine openai`) work
    # unchanged. Prompts are always used exactly as given (no BOS is added) and
    # special tokens are never emitted, so both must stay at these values.
    add_special_tokens: Literal[False] = False
    skip_special_tokens: Literal[True] = True

    def wanted_top_logprobs(self) -> int | None:
        return self.logprobs


class TokenizeRequest(OpenAIModel):
    """vLLM's `/tokenize`: either a prompt or chat messages."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: Literal[True] = True
    add_special_tokens: Literal[False] = False  # as in CompletionRequest
    session_params: dict | None = None  # a front's session key for routers (openr.session); not read here


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
