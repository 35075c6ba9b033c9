"""A PRM on another server: our `/v1/rewards` on a remote `openr serve`, the
scale-out path for scoring (the same way `--engine openai` is for generation).

It has the batch interface of `StepTagPRM`, so the local micro-batcher still
coalesces this server's calls before they cross the network.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import httpx

from openr.contracts import ScorerInputTooLong

TIMEOUT_S = 300.0


class RemotePRM:
    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=TIMEOUT_S)
        self.model = model

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """One `/v1/rewards` request per distinct question; scores come back in input order."""
        by_question: dict[str, list[int]] = defaultdict(list)
        for index, (question, _) in enumerate(pairs):
            by_question[question].append(index)
        scores: list[list[float]] = [[] for _ in pairs]
        for question, indices in by_question.items():
            body = {"question": question, "candidates": [list(pairs[i][1]) for i in indices]}
            if self.model:
                body["model"] = self.model
            response = self.client.post(f"{self.base_url}/rewards", json=body)
            if response.status_code == 400 and _error_code(response) == "context_length_exceeded":
                raise ScorerInputTooLong(f"remote PRM {self.base_url}: {response.json()['error']['message']}")
            if response.status_code != 200:
                raise RuntimeError(f"remote PRM {self.base_url} answered {response.status_code}: {response.text}")
            for index, row in zip(indices, response.json()["scores"]):
                scores[index] = row
        return scores


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
