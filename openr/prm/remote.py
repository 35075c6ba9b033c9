"""A PRM on another server, the scale-out path for scoring (as `--engine openai`
is for generation): our `/v1/rewards` on a remote `openr serve`, or vLLM's
pooling API (`/pooling`) in front of a PRM on its pooling runner, e.g.
Qwen2.5-Math-PRM with `--runner pooling`, which returns one [p(bad), p(good)]
per step tag (STEP pooling).

Both have the batch interface of `StepTagPRM`, so the local micro-batcher
still coalesces this server's calls before they cross the network. The remote's
errors come back as the errors a local PRM gives: too long an input is
`ScorerInputTooLong` (a 400, or a dropped candidate in a search), another 4xx
keeps its status, and an unreachable or failing server is a 503 (`ScorerError`).
Every request carries the session key of the search it scores for
(`openr.session`), and the micro-batcher never mixes searches in one batch for
these scorers (`session_affine`), so a router keeps each search on one replica.
"""

from __future__ import annotations

from collections import defaultdict
from contextvars import copy_context
from typing import Sequence

import httpx

from openr.contracts import ScorerError, ScorerInputTooLong
from openr.prm.formats import QWEN_PRM, qwen_prm_messages
from openr.session import session_body, session_headers

TIMEOUT_S = 300.0
MAX_PARALLEL_REQUESTS = 16  # /pooling requests of one micro-batch in flight at once
PROBE_TIMEOUT_S = 10.0  # asking a remote at start-up what it serves
API_CHOICES = ("auto", "openr", "vllm")
CONTEXT_ERROR_HINTS = ("context_length_exceeded", "maximum context length", "too long", "exceeds")


class RemoteScorer:
    """An HTTP client to a scoring server, with its errors mapped."""

    session_affine = True  # the micro-batcher batches one search's calls at a time (openr.prm.batcher)

    def __init__(self, root_url: str, api_key: str | None = None, model: str | None = None):
        self.root_url = root_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=TIMEOUT_S)
        self.model = model

    def post(self, path: str, body: dict) -> dict:
        if self.model:
            body = {"model": self.model, **body}
        url = f"{self.root_url}{path}"
        try:
            response = self.client.post(url, json=body, headers=session_headers())
        except httpx.HTTPError as exc:
            raise ScorerError(f"the remote PRM at {url} is unreachable: {exc}") from exc
        if response.status_code == 200:
            return response.json()
        message, code = _error_of(response)
        if response.status_code == 400 and (code == "context_length_exceeded"
                                            or any(hint in message.lower() for hint in CONTEXT_ERROR_HINTS)):
            raise ScorerInputTooLong(f"remote PRM {url}: {message}")
        if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404, 429):
            raise ScorerError(f"remote PRM {url}: {message}", response.status_code, code)
        # Our credentials, its routes or its load are the server's problem, not the client's.
        raise ScorerError(f"the remote PRM at {url} answered {response.status_code}: {message}")


class RemotePRM(RemoteScorer):
    """Another `openr serve`'s `/v1/rewards`."""

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """One `/v1/rewards` request per distinct question; scores come back in input order."""
        by_question: dict[str, list[int]] = defaultdict(list)
        for index, (question, _) in enumerate(pairs):
            by_question[question].append(index)
        scores: list[list[float]] = [[] for _ in pairs]
        for question, indices in by_question.items():
            body = {"question": question, "candidates": [list(pairs[i][1]) for i in indices]}
            answer = self.post("/v1/rewards", body)
            for index, row in zip(indices, answer["scores"]):
                scores[index] = row
        return scores


class VLLMPoolingPRM(RemoteScorer):
    """A Qwen2.5-Math-PRM-format model on vLLM's pooling runner, through `/pooling`.

    Each candidate goes as its chat messages (the model card's: system prompt,
    question, the steps each ended by <extra_0>), one request each (the chat
    form takes one conversation); vLLM applies the model's chat template and
    answers one [p0, p1] per <extra_0>, so the k-th row is step k's, and
    P(label 1) is its score. The micro-batch's requests go out concurrently.
    """

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        from concurrent.futures import ThreadPoolExecutor

        # The pool's threads start with an empty context: each request runs in
        # a copy of this one, which holds the search's session.
        contexts = [copy_context() for _ in pairs]
        with ThreadPoolExecutor(max_workers=min(len(pairs), MAX_PARALLEL_REQUESTS) or 1) as pool:
            return list(pool.map(lambda context, pair: context.run(self.score_one, *pair), contexts, pairs))

    def score_one(self, question: str, steps: Sequence[str]) -> list[float]:
        body = {"messages": qwen_prm_messages(question, list(steps)), "add_generation_prompt": False,
                **session_body()}
        rows = self.post("/pooling", body)["data"][0]["data"]
        if len(rows) != len(steps):
            raise ScorerError(f"the remote PRM at {self.root_url} gave {len(rows)} step scores for {len(steps)} "
                              "steps: is it a Qwen2ForProcessRewardModel on the pooling runner, with its step tag "
                              "<extra_0>?")
        return [float(row[1]) for row in rows]


def connect_remote_prm(url: str, api: str = "auto", api_key: str | None = None, prm_format: str = "auto",
                       model: str | None = None) -> RemotePRM | VLLMPoolingPRM:
    """The client for a PRM at `url` (with or without /v1), speaking `api`; with
    "auto", the server's OpenAPI routes say which (/v1/rewards: openr, /pooling:
    vllm). Unreachable or unidentifiable is a `ValueError`, raised at start-up."""
    root = url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if api == "auto":
        try:
            paths = httpx.get(f"{root}/openapi.json", headers=headers, timeout=PROBE_TIMEOUT_S).json()["paths"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot ask the PRM server at {url} which API it speaks ({exc}); pass --prm-api "
                             "openr|vllm") from exc
        api = "openr" if "/v1/rewards" in paths else "vllm" if "/pooling" in paths else None
        if api is None:
            raise ValueError(f"the server at {url} serves neither /v1/rewards (openr serve) nor /pooling (vLLM)")
    if api == "openr":
        return RemotePRM(root, api_key, model)
    if prm_format not in ("auto", QWEN_PRM):
        raise ValueError(f"a PRM behind vLLM's pooling API is read in the {QWEN_PRM} format (step tag <extra_0>, "
                         f"[p0, p1] per step); --prm-format {prm_format} is not supported there")
    if model is None:
        try:
            model = httpx.get(f"{root}/v1/models", headers=headers, timeout=PROBE_TIMEOUT_S).json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"cannot list the models of the vLLM server at {url}: {exc}") from exc
    return VLLMPoolingPRM(root, api_key, model)


def _error_of(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) of an OpenAI-shaped or vLLM error body, or the raw text."""
    try:
        body = response.json()
        error = body.get("error", body)
        if isinstance(error, dict):
            code = error.get("code")
            return str(error.get("message", response.text)), code if isinstance(code, str) else None
        return str(error), None
    except (ValueError, AttributeError):
        return response.text[:500], None
