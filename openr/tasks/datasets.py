"""Loaders from public problem sets in jsonl form (GSM8K, MATH, MATH500) into `Problem`.

Datasets are passed by path, and `load_problems` tells the format from the fields
of the first row, so callers never need to say which set a file holds. Rows
without a final answer are skipped: nothing can be graded against them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openr.tasks.problem import STEP_SEPARATOR, Problem

GSM8K_ANSWER_MARK = "####"
# GSM8K rationales carry calculator annotations like "<<48/2=24>>".
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_LEVEL = re.compile(r"(\d+)")

Row = dict[str, Any]


def _level(value: Any) -> int | None:
    """MATH levels come as "Level 3" (or 3); "Level ?" and missing give None."""
    if isinstance(value, int):
        return value
    match = _LEVEL.search(str(value or ""))
    return int(match.group(1)) if match else None


def gsm8k_problem(row: Row, index: int) -> Problem | None:
    """A GSM8K row: `question`, and `answer` = rationale lines then "#### N"."""
    rationale, mark, final = row["answer"].rpartition(GSM8K_ANSWER_MARK)
    answer = _THOUSANDS_COMMA.sub("", final.strip())
    if not mark or not answer:
        return None
    lines = [_CALCULATOR_NOTE.sub("", line).strip() for line in rationale.splitlines()]
    steps = [line for line in lines if line] + [f"The answer is \\boxed{{{answer}}}"]
    return Problem(id=f"gsm8k-{index}", question=row["question"], answer=answer,
                   solution=STEP_SEPARATOR.join(steps), source="gsm8k", level=None)


def math500_problem(row: Row, index: int) -> Problem | None:
    """A MATH500 row: `problem`, `solution` (paragraphs ending in \\boxed), `answer`, `level`."""
    if not row["answer"]:
        return None
    key = row.get("unique_id", index)
    return Problem(id=f"math500-{key}", question=row["problem"], answer=row["answer"],
                   solution=row["solution"], source="math500", level=_level(row.get("level")))


def math_problem(row: Row, index: int) -> Problem | None:
    """A MATH training row with its answer only: `problem`, `final_answer`."""
    if not row["final_answer"]:
        return None
    return Problem(id=f"math-{index}", question=row["problem"], answer=row["final_answer"],
                   solution=None, source="math", level=_level(row.get("level")))


# Each format: the fields that identify it, and the row converter.
FORMATS: dict[str, tuple[frozenset[str], Callable[[Row, int], Problem | None]]] = {
    "gsm8k": (frozenset({"question", "answer"}), gsm8k_problem),
    "math500": (frozenset({"problem", "solution", "answer"}), math500_problem),
    "math": (frozenset({"problem", "final_answer"}), math_problem),
}


def detect_format(row: Row) -> str:
    """The name in FORMATS whose identifying fields the row has."""
    for name, (fields, _) in FORMATS.items():
        if fields <= row.keys():
            return name
    raise ValueError(f"unknown problem format with fields {sorted(row)}")


def load_problems(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Problems from a jsonl file, in file order; at most `limit` when given."""
    problems: list[Problem] = []
    convert = None
    with open(path, encoding="utf-8") as rows:
        for index, line in enumerate(rows):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            if convert is None:
                convert = FORMATS[detect_format(row)][1]
            try:
                problem = convert(row, index)
            except KeyError as missing:
                raise ValueError(f"{path}:{index + 1}: missing field {missing}") from None
            if problem is not None:
                problems.append(problem)
    return problems
