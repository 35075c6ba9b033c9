"""The one record every problem source produces, and the step convention it uses.

Search, training and evaluation all see problems through `Problem`, so a new
dataset needs only a loader. A step is a paragraph: the text up to a blank line,
which is also the stop string the policy generates to.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Problem:
    """One question with its gold final answer (and gold solution when known)."""

    id: str
    question: str
    answer: str
    # Gold steps joined by STEP_SEPARATOR, ending in \boxed{answer}; None when
    # the source has final answers only.
    solution: str | None
    source: str
    level: int | None


def split_steps(solution: str, separator: str = STEP_SEPARATOR) -> list[str]:
    """The non-empty steps of a solution, in order."""
    return [step.strip() for step in solution.split(separator) if step.strip()]
