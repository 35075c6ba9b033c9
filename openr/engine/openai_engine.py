"""Remote backend: any OpenAI-compatible server with vLLM's raw-prompt endpoints
(`/v1/completions`, `/tokenize`, `/detokenize`): a `vllm serve` pool behind a
load balancer, or another `openr serve`. This is the scale-out path: this
process stays stateless and light while the remote servers hold the GPUs.
Inside a search every request carries the search's session key
(`openr.session`), so a router can keep the search on one warm replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import AsyncIterator, Awaitable, Callable

import httpx

from openr.engine.base import (
    Delta,
    Engine,
    EngineError,
    EngineRequestError,
    PreparedPrompt,
    SamplingConfig,
    TokenLogprob,
)
from openr.session import session_body, session_headers

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # one sample of a long completion on a busy pool
MAX_CONNECTIONS = 256
FINISH = {"stop": "stop", "length": "length"}
# A token covers at least one byte of its text, but for SentencePiece's word-start
# marker, which a tokenizer may put before the first word: so a prompt of B UTF-8
# bytes is at most B + this many tokens, and one that surely fits is not tokenized.
TOKENS_OVER_BYTES = 1
# A remote that is full for now (429, as `openr serve` answers past its queue, or
# 503) is asked again after its Retry-After, or a backoff doubling from
# BUSY_BACKOFF_S, for at most BUSY_WAIT_S in all: a search or a labelling run
# waits out a burst instead of losing its work to it, and a remote that stays
# full still fails the request, with the remote's own error.
BUSY_STATUSES = (429, 503)
BUSY_BACKOFF_S = 0.5
BUSY_WAIT_S = 120.0


class OpenAIEngine(Engine):
    name = "openai"
    # Passed through to the remote server, which checks token ids against its
    # vocabulary; logprobs are the remote's (vLLM's completions shape, which
    # openr serve gives too).
    features = frozenset({"penalties", "logit_bias", "logprobs"})

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 max_in_flight: int | None = None):
        """`max_in_flight` bounds the requests this engine has at the remote at
        once (the rest wait here): a client that sends bursts larger than the
        remote queues (a labelling run against `openr serve`, whose default is 32
        running and 128 queued) would otherwise be turned away with 429."""
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.root_url = self.base_url[: -len("/v1")]
        self.model = model
        self.device = f"remote {self.root_url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
        )
        self._active = 0

    async def start(self) -> None:
        models = (await self._post_or_get("GET", f"{self.base_url}/models"))["data"]
        card = next((m for m in models if m["id"] == self.model), None) if self.model else models[0]
        if card is None:
            raise EngineError(f"{self.base_url} does not serve {self.model!r}: it has {[m['id'] for m in models]}")
        self.model = card["id"]
        self.max_model_len = card.get("max_model_len") or 0
        logger.info("remote model %s at %s, context %s", self.model, self.base_url, self.max_model_len or "unknown")

    def discover_model(self) -> str:
        """The remote's first model name, asked synchronously before the server starts."""
        headers = dict(self.client.headers)
        response = httpx.get(f"{self.base_url}/models", headers=headers, timeout=CONNECT_TIMEOUT_S)
        response.raise_for_status()
        return response.json()["data"][0]["id"]

    async def close(self) -> None:
        await self.client.aclose()

    @property
    def active_sequences(self) -> int:
        return self._active

    async def prepare_chat(self, messages: list[dict]) -> PreparedPrompt:
        body = {"model": self.model, "messages": messages, "add_generation_prompt": True, **session_body()}
        tokens = (await self._post_or_get("POST", f"{self.root_url}/tokenize", body))["tokens"]
        return PreparedPrompt(await self.detokenize(tokens), len(tokens))

    async def tokenize(self, text: str) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        return (await self._post_or_get("POST", f"{self.root_url}/tokenize", body))["tokens"]

    async def detokenize(self, token_ids: list[int]) -> str:
        body = {"model": self.model, "tokens": token_ids}
        return (await self._post_or_get("POST", f"{self.root_url}/detokenize", body))["prompt"]

    async def fit_max_tokens(self, prompt: str, max_tokens: int) -> int:
        """`max_tokens` cut to the room the remote's context leaves after `prompt`
        (0: none), as an in-process engine stops at its context: vLLM refuses
        (400) a request whose prompt and max_tokens exceed max_model_len, and a
        search's step asks for its max_step_tokens wherever its prefix has got to.
        A remote that names no max_model_len gets `max_tokens` as it is."""
        if not self.max_model_len or len(prompt.encode()) + TOKENS_OVER_BYTES + max_tokens <= self.max_model_len:
            return max_tokens
        return max(0, min(max_tokens, self.max_model_len - len(await self.tokenize(prompt))))

    async def stream(self, prompt: str, params: SamplingConfig) -> AsyncIterator[Delta]:
        max_tokens = await self.fit_max_tokens(prompt, params.max_tokens)
        if max_tokens == 0:  # the prompt fills the context: nothing can follow it
            yield Delta("", [], "length")
            return
        body = {
            "model": self.model, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "stop": list(params.stop) or None,
            "seed": params.seed, "logprobs": params.top_logprobs or 0, "stream": True,
            "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
            "logit_bias": {str(token): bias for token, bias in params.logit_bias} or None,
            "add_special_tokens": False,  # vLLM extension: the prompt is already rendered
            "skip_special_tokens": True,
        }
        if params.ignore_eos:  # vLLM's extension, sent only when asked for
            body["ignore_eos"] = True
        if self._slots is not None:  # held until the stream ends: the remote is busy with it till then
            await self._slots.acquire()
        self._active += 1
        # A connection of its own: closing it is the one reliable way to make the
        # remote server abort when this sample is cancelled (httpx's pooled
        # response close can be swallowed by the cancellation it runs in).
        client = httpx.AsyncClient(headers=self.client.headers, timeout=self.client.timeout)
        try:
            request = client.build_request("POST", f"{self.base_url}/completions", json=body,
                                           headers=session_headers())
            response = await _answered(lambda: client.send(request, stream=True))
            if response.status_code != 200:
                await response.aread()
                raise _remote_error(response)
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                payload = json.loads(line[len("data: "):])
                if "error" in payload:
                    raise EngineError(f"remote error: {payload['error'].get('message')}")
                for choice in payload.get("choices", []):
                    logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
                    finish = _finish_of(choice)
                    stop_reason = choice.get("stop_reason") if finish == "stop" else None
                    tokens = _tokens_of(choice, params.top_logprobs)
                    if tokens and finish == "eos":  # the end-of-text token is counted, not shown (as on hf, vllm)
                        tokens.pop()
                    yield Delta(choice.get("text", ""), [float(x) for x in logprobs], finish,
                                stop_reason=stop_reason if isinstance(stop_reason, str) else None, tokens=tokens)
        except httpx.HTTPError as exc:
            raise EngineError(f"remote backend {self.base_url} failed: {exc}") from exc
        finally:
            self._active -= 1
            if self._slots is not None:
                self._slots.release()
            await asyncio.shield(client.aclose())

    async def _post_or_get(self, method: str, url: str, body: dict | None = None) -> dict:
        try:
            response = await _answered(lambda: self.client.request(method, url, json=body, headers=session_headers()))
        except httpx.HTTPError as exc:
            raise EngineError(f"remote backend {url} failed: {exc}") from exc
        if response.status_code != 200:
            raise _remote_error(response)
        return response.json()


async def _answered(send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """`send()`'s response, sent again while the remote answers "busy" (429 or
    503) and BUSY_WAIT_S is not spent: the first other answer, or the last."""
    waited = 0.0
    while True:
        response = await send()
        pause = None if response.status_code == 200 else _busy_pause(response, waited)
        if pause is None:
            return response
        await response.aclose()
        await asyncio.sleep(pause)
        waited += pause


def _busy_pause(response: httpx.Response, waited: float) -> float | None:
    """Seconds to wait before asking a busy remote again (its Retry-After, else
    a backoff that doubles with what was already waited), or None: the answer
    is not "busy", or BUSY_WAIT_S is spent."""
    if response.status_code not in BUSY_STATUSES or waited >= BUSY_WAIT_S:
        return None
    try:
        pause = float(response.headers.get("retry-after", ""))
    except ValueError:
        pause = math.nan
    if not math.isfinite(pause):  # absent, a date, or "nan"/"inf" from a hostile remote: back off instead
        pause = max(BUSY_BACKOFF_S, waited)
    return min(max(pause, 0.0), BUSY_WAIT_S - waited) or BUSY_BACKOFF_S


def _tokens_of(choice: dict, top: int | None) -> list[TokenLogprob] | None:
    """A streamed choice's tokens with their `top` most likely alternatives, from
    the completions API's `logprobs` (`tokens`, `token_logprobs`, and a
    `top_logprobs` dict per position, which vLLM gives the sampled token too).
    A server that sends log-probabilities alone gives tokens without text or
    alternatives."""
    if top is None:
        return None
    logprobs = choice.get("logprobs") or {}
    values = logprobs.get("token_logprobs") or []
    texts = logprobs.get("tokens") or [""] * len(values)
    tops = logprobs.get("top_logprobs") or [None] * len(values)
    return [TokenLogprob(text, float(value), tuple(sorted(((t, float(v)) for t, v in (alternatives or {}).items()),
                                                           key=lambda item: -item[1])[:top]))
            for text, value, alternatives in zip(texts, values, tops)]


def _finish_of(choice: dict) -> str | None:
    """The engine's finish reason of a streamed choice. "stop" is both an end of
    text and a stop string in OpenAI's terms; vLLM's `stop_reason` tells them
    apart (None: end of text; the string or token that stopped it otherwise),
    and a search needs to know which: a step that ends in eos ends its solution."""
    finish = choice.get("finish_reason")
    if not finish:
        return None
    if finish == "stop" and "stop_reason" in choice and choice["stop_reason"] is None:
        return "eos"
    return FINISH.get(finish, "length")


def _remote_error(response: httpx.Response) -> Exception:
    """A remote 4xx is the client's mistake and keeps its status; anything else is ours."""
    try:
        error = response.json()["error"]
        message, param = error.get("message", response.text), error.get("param")
    except (ValueError, KeyError, TypeError):
        message, param = response.text, None
    if 400 <= response.status_code < 500 and response.status_code != 401:
        return EngineRequestError(response.status_code, message, param)
    return EngineError(f"remote backend answered {response.status_code}: {message}")
