"""Every standard chat- and text-completions field is honoured or refused, never ignored.

The request types (`protocol.py`) check each field's type and range. This
module decides, for a well-formed request, what this server and its engine
cannot do, and refuses it with a 400 that names the field: a client that
asks for tools, structured output or log-probabilities and silently gets none
is worse off than one told no. Fields OpenAI documents as hints with no effect
on the output (`user`, `metadata`, `prompt_cache_key`, `safety_identifier`,
`parallel_tool_calls` without tools, `service_tier: auto/default`) are accepted.
Fields outside OpenAI's API are logged and ignored, as vLLM does.
"""

from __future__ import annotations

from openr.engine.base import Engine
from openr.server.errors import APIError
from openr.server.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields


def unsupported(param: str, what: str) -> APIError:
    return APIError(400, f"{param}: {what}", param, "unsupported_parameter")


def check_chat_fields(request: ChatCompletionRequest, engine: Engine, search: bool) -> None:
    """Raise a 400 for the first field the request sets that cannot be honoured."""
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs: only allowed when logprobs is true", "top_logprobs", "invalid_value")
    for i, message in enumerate(request.messages):
        for key in ("tool_calls", "function_call", "audio"):
            if (message.model_extra or {}).get(key):
                raise unsupported(f"messages.{i}.{key}", "this server does not support tool calls or audio")
    if request.tools or request.functions:
        param = "tools" if request.tools else "functions"
        raise unsupported(param, "this server does not support tool calling")
    for param in ("tool_choice", "function_call"):
        if getattr(request, param) not in (None, "none"):
            raise unsupported(param, "this server does not support tool calling")
    if request.audio is not None or (request.modalities and request.modalities != ["text"]):
        raise unsupported("audio" if request.audio is not None else "modalities", "only text output is supported")
    for param, what in (("prediction", "predicted outputs are not supported"),
                        ("web_search_options", "web search is not supported")):
        if getattr(request, param) is not None:
            raise unsupported(param, what)
    if request.store:
        raise unsupported("store", "this server does not store completions")
    if request.service_tier in ("flex", "scale", "priority"):
        raise unsupported("service_tier", "this server has one tier: use 'auto' or 'default'")
    if request.verbosity not in (None, "medium"):
        raise unsupported("verbosity", "the served model has no verbosity control")
    if search:
        _check_search_fields(request)
    check_sampling_fields(request, engine)
    if not search:
        _check_output_fields(request, engine)


def check_sampling_fields(request: SamplingFields, engine: Engine) -> None:
    """What chat and text completions share: stream options, penalties, logit bias."""
    if request.stream_options is not None and not request.stream:
        raise APIError(400, "stream_options: only allowed when stream is true", "stream_options", "invalid_value")
    if (request.presence_penalty or request.frequency_penalty) and "penalties" not in engine.features:
        param = "presence_penalty" if request.presence_penalty else "frequency_penalty"
        raise unsupported(param, f"the {engine.name} engine does not apply penalties")
    if request.logit_bias:
        if "logit_bias" not in engine.features:
            raise unsupported("logit_bias", f"the {engine.name} engine does not apply a logit bias")
        if engine.vocab_size:
            outside = sorted(int(t) for t in request.logit_bias if int(t) >= engine.vocab_size)
            if outside:
                raise APIError(400, f"logit_bias: token id {outside[0]} is outside the vocabulary "
                                    f"(ids 0..{engine.vocab_size - 1})", "logit_bias", "invalid_value")


def check_completion_fields(request: CompletionRequest, engine: Engine) -> None:
    """`/v1/completions`' own fields that this server cannot honour."""
    if request.logprobs and "logprobs" not in engine.features:
        raise unsupported("logprobs", f"the {engine.name} engine reports no alternative tokens: "
                                      "logprobs 0 gives each token's log-probability")
    if request.echo:
        raise unsupported("echo", "this server does not return the prompt with its completion")
    if request.suffix:
        raise unsupported("suffix", "this server does not insert text before a suffix")
    if request.best_of is not None and request.best_of != request.n:
        raise unsupported("best_of", "this server returns every sample it draws: ask for n; to keep the best of "
                                     "several by a reward model, use /v1/chat/completions with a search")


def _check_output_fields(request: ChatCompletionRequest, engine: Engine) -> None:
    if request.logprobs and "logprobs" not in engine.features:
        raise unsupported("logprobs", f"the {engine.name} engine does not report per-token log-probabilities")
    wants_json = request.response_format is not None and request.response_format.type != "text"
    if wants_json and "json_output" not in engine.features:
        raise unsupported("response_format", f"the {engine.name} engine cannot constrain output to JSON; "
                                             "serve with --engine vllm for json_object / json_schema")


# Per-sample controls that mean nothing to a search, which samples many steps,
# scores them and assembles one answer: refused rather than ignored.
SEARCH_REFUSED = ("logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "response_format", "stop",
                  "ignore_eos")


def _check_search_fields(request: ChatCompletionRequest) -> None:
    for param in SEARCH_REFUSED:
        value = getattr(request, param)
        if value and not (param == "response_format" and value.type == "text"):
            raise unsupported(param, "not supported with a search (search or reasoning_effort): a search "
                                     "builds its answer from many scored steps")
