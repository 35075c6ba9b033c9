"""Final-answer extraction and grading, shared by search (voting), training
(outcome rewards) and evaluation so that all three count the same answers right.

Equivalence is decided by math-verify (1/2 = \\frac12 = 0.5, 3,000 = 3000, sets,
intervals, ...); plain string and number comparison is only the fallback for
answers it cannot parse.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

from math_verify import parse, verify

# math-verify bounds each parse/compare with signal.alarm, which only works in the
# main thread; elsewhere (server worker threads) we turn it off and rely on
# MAX_ANSWER_CHARS to keep sympy away from pathological input.
VERIFY_TIMEOUT_SECONDS = 5
MAX_ANSWER_CHARS = 1000

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*([^\n]+)", re.IGNORECASE)
# A number with optional thousands commas and decimals; the look-behind stops it
# starting inside a word like "x2".
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def _braced(text: str, open_index: int) -> str | None:
    """Contents of the brace group opening at `open_index`, or None if unbalanced."""
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1:i]
    return None


def _last_boxed(text: str) -> str | None:
    starts = sorted(
        (m.end() for cmd in _BOX_COMMANDS for m in re.finditer(re.escape(cmd), text)),
        reverse=True,
    )
    for start in starts:
        rest = text[start:].lstrip()
        if rest.startswith("{"):
            content = _braced(rest, 0)
            if content is not None:
                return content
        elif rest and text[start].isspace():
            # "\boxed 5": TeX takes the next token as the argument.
            return rest.split(maxsplit=1)[0].rstrip("$.")
    return None


def _clean(answer: str) -> str:
    """Drop the sentence and math-mode punctuation around an answer."""
    return answer.strip().rstrip(".").strip().strip("$").strip()


def final_answer(text: str) -> str | None:
    """The answer a solution states as final, or None: the last \\boxed{...}, the
    last "#### X" (GSM8K) or the last "The answer is X"; never a stray number
    (a solution cut off mid-way states none). What RL rewards and held-out
    accuracy counts."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for pattern in (_HASHES, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches and _clean(matches[-1]):
            return _clean(matches[-1])
    return None


def extract_answer(text: str) -> str | None:
    """The final answer a solution gives, or None if it gives none.

    In order of trust: the last \\boxed{...} (balanced braces), the last
    "#### X" (GSM8K), the last "The answer is X", the last number in the text.
    """
    stated = final_answer(text)
    if stated is not None:
        return stated
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def _timeout_seconds() -> int | None:
    if threading.current_thread() is threading.main_thread():
        return VERIFY_TIMEOUT_SECONDS
    return None


def _tidy(answer: str) -> str:
    """Drop typesetting that math-verify trips on: "29,\\!322" and "3{,}000" spacing, "\\$"."""
    text = _clean(answer).replace("{,}", ",").replace("\\!", "").replace("\\$", "")
    return _THOUSANDS_COMMA.sub("", text)


def _parse(answer: str) -> list:
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return []
    # Boxing makes math-verify read the whole string as one LaTeX answer: a bare
    # "\frac12" or "(3, \pi/2)" is otherwise missed or cut to its first number.
    parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=_timeout_seconds())
    if _has_math(parsed) or _tidy(answer) == answer:
        return parsed
    return parse(f"\\boxed{{{_tidy(answer)}}}", parsing_timeout=_timeout_seconds())


def _has_math(parsed: list) -> bool:
    # parse() returns sympy objects plus the matched strings; a list of strings
    # only means it could not read the answer as mathematics.
    return any(not isinstance(item, str) for item in parsed)


def _normalized(answer: str) -> str:
    text = _TEXT_COMMAND.sub(r"\1", _tidy(answer))
    return "".join(text.split()).lower()


def _as_number(text: str) -> Fraction | None:
    # Plain decimals and fractions only: Fraction("1e99999999") would take ages.
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except ZeroDivisionError:
        return None


def _fallback_equal(predicted: str, gold: str) -> bool:
    predicted, gold = _normalized(predicted), _normalized(gold)
    if not predicted or not gold:
        return False
    predicted_number, gold_number = _as_number(predicted), _as_number(gold)
    if predicted_number is not None and gold_number is not None:
        return predicted_number == gold_number
    return predicted == gold


def is_correct(prediction_text: str, gold_answer: str, lenient: bool = True) -> bool:
    """Whether the final answer in `prediction_text` equals `gold_answer`; with
    `lenient=False` only a stated final answer counts (no last-number fallback)."""
    predicted = extract_answer(prediction_text) if lenient else final_answer(prediction_text)
    if predicted is None:
        return False
    gold_parsed, predicted_parsed = _parse(gold_answer), _parse(predicted)
    if _has_math(gold_parsed) and _has_math(predicted_parsed):
        return verify(gold_parsed, predicted_parsed, timeout_seconds=_timeout_seconds())
    return _fallback_equal(predicted, gold_answer)
