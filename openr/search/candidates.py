"""What a search takes in and hands back: the problem, candidate solutions, the result.

Every strategy returns the same `SearchResult`, so the server turns any search
into a chat completion (and an optional trace) the same way. How a final answer
is read from a solution comes with the problem (`SearchProblem.extract_answer`),
so search never imports the grader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from openr.contracts import Step
from openr.tasks.problem import STEP_SEPARATOR, split_steps

BudgetReason = Literal["tokens", "prm_calls", "time", "context"]  # context: the PRM's
# Why a search stopped early: a budget ran out, or (adaptive stopping) its answer was settled.
StopReason = BudgetReason | Literal["confident"]
# A solution's final answer, or None when it states none (e.g. tasks.grading.extract_answer).
AnswerExtractor = Callable[[str], "str | None"]


@dataclass(frozen=True)
class SearchProblem:
    """`prompt` is the chat-rendered question, ending where the assistant's text
    begins (what the policy continues); `question` is the plain text the PRM sees;
    `extract_answer` reads a solution's final answer, which voting groups by;
    `step_separator` is what the policy writes between steps (its stop string)."""

    question: str
    prompt: str
    extract_answer: AnswerExtractor
    step_separator: str = STEP_SEPARATOR

    def prefix(self, steps: tuple[str, ...]) -> str:
        """The text the policy continues to write the step after `steps`."""
        if not steps:
            return self.prompt
        return self.prompt + self.step_separator.join(steps) + self.step_separator

    def empty(self) -> Candidate:
        """The candidate with no steps yet, whose steps join with this problem's separator."""
        return Candidate(separator=self.step_separator)


@dataclass(frozen=True)
class Candidate:
    """A (possibly partial) solution: its steps, their PRM scores, and how it ended.

    `finished` means the policy ended it (eos); `truncated` means a token cap cut
    it. A candidate that is neither was still open when the search stopped.
    `step_scores` is empty when no PRM scored it. `answer` is filled in when the
    search concludes (`with_answer`), from the problem's answer extractor.
    """

    steps: tuple[str, ...] = ()
    step_scores: tuple[float, ...] = ()
    aggregate_score: float = 0.0
    tokens: int = 0
    finished: bool = False
    truncated: bool = False
    answer: str | None = None
    separator: str = STEP_SEPARATOR  # between steps in its text

    @property
    def ended(self) -> bool:
        return self.finished or self.truncated

    @property
    def text(self) -> str:
        return self.separator.join(self.steps)

    def with_answer(self, extract_answer: AnswerExtractor) -> Candidate:
        return replace(self, answer=extract_answer(self.text))

    def extend(self, step: Step) -> Candidate:
        """This candidate plus one more step, unscored until the PRM sees it."""
        return Candidate(
            steps=self.steps + (step.text,),
            tokens=self.tokens + step.num_tokens,
            finished=step.finish_reason == "eos",
            truncated=step.finish_reason == "length",
            separator=self.separator,
        )

    def scored(self, step_scores: list[float], aggregate_score: float) -> Candidate:
        return replace(self, step_scores=tuple(step_scores), aggregate_score=aggregate_score)

    def continue_with(self, completion: Step) -> Candidate:
        """This candidate continued to its end by one completion sampled in one
        call, cut into steps at the separator."""
        return Candidate(
            steps=self.steps + tuple(split_steps(completion.text, self.separator)),
            tokens=self.tokens + completion.num_tokens,
            finished=completion.finish_reason == "eos",
            truncated=completion.finish_reason == "length",
            separator=self.separator,
        )


def answer_key(answer: str | None) -> str | None:
    """Answers that differ only in spacing or a trailing period vote together.

    Deliberately not math-verify equivalence: that is pairwise and slow, and
    voting needs a key it can group by.
    """
    if answer is None:
        return None
    return "".join(answer.split()).rstrip(".")


@dataclass(frozen=True)
class SearchTiming:
    """Where a search's wall time went, in seconds: awaiting the policy (the
    engine's queue, prefill and decode, and the trip there and back), awaiting
    the PRM (its queue and scoring), and the rest (the strategy's own work and
    the event loop serving other requests meanwhile); and the round trips to
    each (not `prm_calls`, which counts candidates scored)."""

    wall_seconds: float = 0.0
    policy_seconds: float = 0.0
    prm_seconds: float = 0.0
    policy_round_trips: int = 0
    prm_round_trips: int = 0

    @property
    def other_seconds(self) -> float:
        return max(0.0, self.wall_seconds - self.policy_seconds - self.prm_seconds)


@dataclass(frozen=True)
class SearchResult:
    """The outcome of one search.

    `candidates` are ranked best first by the strategy's aggregation, so
    `candidates[0]` is the chosen solution. `stop_reason` names the budget that
    cut the search short, "confident" when adaptive stopping found the answer
    settled, or is None when the search ran to completion. `decisions` says what
    the search decided along the way (adaptive waves, what `auto` chose and
    why), for the trace; `timing` where its time went.
    """

    candidates: tuple[Candidate, ...]
    tokens_generated: int
    prm_calls: int
    stop_reason: StopReason | None
    decisions: dict[str, Any] = field(default_factory=dict)
    timing: SearchTiming = field(default_factory=SearchTiming)

    @property
    def answer_text(self) -> str:
        return self.candidates[0].text if self.candidates else ""

    @property
    def finish_reason(self) -> Literal["stop", "length"]:
        """OpenAI's finish reason: "stop" only when the search ran to completion
        and the chosen solution ended on its own; "length" when a budget ran out
        or the chosen solution was cut by a token or step cap."""
        if self.stop_reason not in (None, "confident") or not self.candidates or not self.candidates[0].finished:
            return "length"
        return "stop"

    def top_answers(self, k: int) -> list[Candidate]:
        """Up to `k` candidates with distinct extracted answers, best first."""
        chosen: list[Candidate] = []
        seen: set[str | None] = set()
        for candidate in self.candidates:
            if len(chosen) >= k:
                break
            key = answer_key(candidate.answer)
            if key not in seen:
                seen.add(key)
                chosen.append(candidate)
        return chosen
