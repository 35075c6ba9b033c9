"""The two contracts every search strategy is written against, and the `Step` they trade in.

Strategies see only `Policy.generate_steps` and `StepScorer.score`; that keeps
them pure Python, testable with fakes and portable across engines (vLLM,
transformers, a remote OpenAI-compatible pool). This module imports nothing
from the project, so engines and PRMs can implement the contracts without
loading the strategies (`openr.search` re-exports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

# "halted": the caller's `TokenMonitor` ended the sample early (see `Policy.generate_steps`).
StepFinish = Literal["step", "eos", "length", "halted"]
# The largest sampling temperature a policy is asked for (OpenAI's limit): the
# chat API and search configs both accept up to this.
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class Step:
    """One generated reasoning step.

    `text` excludes the stop string that ended it; `logprob` is the sum of the
    log-probabilities of its tokens under the policy. Asked for (`top_logprobs`),
    `token_logprobs` holds each token's log-probability and `top_logprobs` each
    position's most likely log-probabilities, best first (the engine's top-k; an
    end-of-text token has a log-probability but no entry there).
    """

    text: str
    num_tokens: int
    finish_reason: StepFinish
    logprob: float
    token_logprobs: tuple[float, ...] = ()
    top_logprobs: tuple[tuple[float, ...], ...] = ()


class TokenMonitor(Protocol):
    """Watches one sample as its tokens are generated: called once per token with
    the token's log-probability and its position's top-k log-probabilities (best
    first; empty where the engine gives none); True halts the sample there, in
    the engine, freeing its slot (finish reason "halted")."""

    def __call__(self, logprob: float, top: Sequence[float]) -> bool: ...


class Policy(Protocol):
    async def generate_steps(
        self,
        prefixes: Sequence[str],
        n: int,
        stop: Sequence[str],
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int | None = None,
        top_logprobs: int = 0,
        monitor: Callable[[], TokenMonitor] | None = None,
    ) -> list[list[Step]]:
        """Sample `n` continuations of every prefix, each up to the first stop string.

        One call expands many prefixes: the engine batches them, and re-sent
        prefixes are cheap where the engine caches them. `top_logprobs` > 0: the
        steps carry per-token log-probabilities and that many top alternatives'.
        `monitor` makes one `TokenMonitor` per sample, which may halt it early.
        """
        ...


class StepScorer(Protocol):
    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """One score in [0, 1] per step of each candidate solution."""
        ...


class ScorerInputTooLong(ValueError):
    """Raised by a `StepScorer` when a candidate does not fit its context. A
    search drops such a candidate (unscored, it cannot be ranked) and notes
    that the PRM's context cut its work (`stop_reason` "context")."""


class ScorerError(RuntimeError):
    """A `StepScorer` on another server failed a call: `status` is what the
    client is answered, the remote's own 4xx when it refused the input, 503 when
    it is unreachable or failing. A search does not catch it; the server maps it."""

    def __init__(self, message: str, status: int = 503, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code
