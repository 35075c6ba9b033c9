"""Seeded multi-step arithmetic problems whose every step can be checked exactly.

They give search and PRM training a task with known-correct steps at any
difficulty, with no download. A problem is a left-to-right chain: a start value,
then 2 to 8 operations (+, -, *, and / only where exact), each applied to the
running value; its level is the number of operations, and operands grow with
the level. It is asked as an expression ("Compute (12 + 7) * 3.") or as a word
problem; the gold solution takes one operation per step ("12 + 7 = 19") and ends
with "The answer is \\boxed{57}". Every running value stays within MAX_ABS_VALUE
(word problems: positive counts), by resampling the operation that overflows.

Splits. The test split is fixed: TEST_SIZE problems drawn from TEST_SEED with
levels cycling through 2..8 (71 or 72 per level), duplicates dropped. Training
problems come from any seed and leave out every problem whose gold solution (the
exact chain of operations) appears in the test split; a word problem and an
expression with the same arithmetic count as the same problem.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from openr.tasks.problem import STEP_SEPARATOR, Problem, split_steps

MIN_LEVEL = 2
MAX_LEVEL = 8
# Three-digit running values: a policy of under a million parameters learns
# each step in minutes on a CPU, yet still slips on long chains.
MAX_ABS_VALUE = 999
TEST_SEED = 20240517
TEST_SIZE = 500
# Share of problems asked as a word problem rather than a bare expression.
WORD_PROBLEM_FRACTION = 0.5
# Operand ranges grow linearly with the level (number of operations).
ADDEND_BASE, ADDEND_PER_LEVEL = 5, 5
FACTOR_MIN, FACTOR_BASE = 2, 1
# Draws of (operator, operand) for one operation before restarting the chain.
MAX_OP_DRAWS = 50
# Corrupted values are off by a multiple (1..this) of any later divisors.
MAX_CORRUPTION_MULTIPLE = 5
# Longer digit runs are not read as numbers, which keeps int() cheap on model text.
MAX_NUMBER_DIGITS = 30

OPERATORS = ("+", "-", "*", "/")
# Accept the typographic signs a model may write for * and /.
_OPERATOR_ALIASES = {"×": "*", "÷": "/"}
_NUM = rf"-?\d{{1,{MAX_NUMBER_DIGITS}}}"
# "a op b = c"; the look-arounds stop a match starting or ending inside a number.
_EQUATION = re.compile(
    rf"(?<![\d.])({_NUM})\s*([-+*/×÷])\s*({_NUM})\s*=\s*({_NUM})(?![\d.])"
)

_NAMES = (("Ann", "She"), ("Ben", "He"), ("Chloe", "She"), ("Dev", "He"),
          ("Eva", "She"), ("Farid", "He"), ("Grace", "She"), ("Hiro", "He"))
_ITEMS = ("apples", "marbles", "stickers", "coins", "cards", "shells")
_PHRASES = {
    "+": ("{p} buys {b} more.", "{p} finds {b} more.", "{p} is given {b} more."),
    "-": ("{p} gives away {b}.", "{p} loses {b}.", "{p} uses up {b}."),
    "*": ("{p} ends up with {b} times as many.",
          "Each one is swapped for {b} new {items}."),
    "/": ("{p} splits them into {b} equal piles and keeps one pile.",
          "{p} shares them equally among {b} people, {p_low}self included, "
          "and keeps one share."),
}


@dataclass(frozen=True)
class _Chain:
    start: int
    ops: tuple[tuple[str, int], ...]


def _apply(value: int, op: str, operand: int) -> int | None:
    """The exact integer result, or None for an inexact or undefined division."""
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    if operand == 0 or value % operand:
        return None
    return value // operand


def _addend_max(level: int) -> int:
    return ADDEND_BASE + ADDEND_PER_LEVEL * level


def _factor_max(level: int) -> int:
    return FACTOR_BASE + level


def _in_bounds(value: int, word: bool) -> bool:
    # Zero is excluded so multiplication and division never collapse the chain;
    # word problems count objects, so they also stay positive.
    return value != 0 and abs(value) <= MAX_ABS_VALUE and (value > 0 or not word)


def _draw_op(rng: random.Random, value: int, level: int, word: bool) -> tuple[str, int] | None:
    for _ in range(MAX_OP_DRAWS):
        op = rng.choice(OPERATORS)
        if op in "+-":
            operand = rng.randint(1, _addend_max(level))
        elif op == "*":
            operand = rng.randint(FACTOR_MIN, _factor_max(level))
        else:
            divisors = [d for d in range(FACTOR_MIN, _factor_max(level) + 1) if value % d == 0]
            if not divisors:
                continue
            operand = rng.choice(divisors)
        result = _apply(value, op, operand)
        if result is not None and _in_bounds(result, word):
            return op, operand
    return None


def _draw_chain(rng: random.Random, level: int, word: bool) -> _Chain:
    while True:
        value = start = rng.randint(2, _addend_max(level))
        ops = []
        for _ in range(level):
            drawn = _draw_op(rng, value, level, word)
            if drawn is None:
                break
            ops.append(drawn)
            value = _apply(value, *drawn)
        if len(ops) == level:
            return _Chain(start, tuple(ops))


def _expression(chain: _Chain) -> str:
    """Fully parenthesised left-to-right expression, e.g. "((12 + 7) * 3) - 5"."""
    text = str(chain.start)
    for i, (op, operand) in enumerate(chain.ops):
        text = f"{text} {op} {operand}"
        if i < len(chain.ops) - 1:
            text = f"({text})"
    return text


def _word_problem(chain: _Chain, rng: random.Random) -> str:
    name, pronoun = rng.choice(_NAMES)
    items = rng.choice(_ITEMS)
    sentences = [f"{name} has {chain.start} {items}."]
    for op, operand in chain.ops:
        template = rng.choice(_PHRASES[op])
        sentences.append(template.format(
            p=pronoun, p_low="her" if pronoun == "She" else "him", b=operand, items=items))
    sentences.append(f"How many {items} does {name} have now?")
    return " ".join(sentences)


def _solution(chain: _Chain) -> tuple[str, int]:
    steps, value = [], chain.start
    for op, operand in chain.ops:
        result = _apply(value, op, operand)
        steps.append(f"{value} {op} {operand} = {result}")
        value = result
    steps.append(f"The answer is \\boxed{{{value}}}")
    return STEP_SEPARATOR.join(steps), value


def _problem(rng: random.Random, level: int, problem_id: str) -> Problem:
    word = rng.random() < WORD_PROBLEM_FRACTION
    chain = _draw_chain(rng, level, word)
    question = _word_problem(chain, rng) if word else f"Compute {_expression(chain)}."
    solution, answer = _solution(chain)
    return Problem(id=problem_id, question=question, answer=str(answer),
                   solution=solution, source="arith", level=level)


def check_levels(min_ops: int, max_ops: int) -> None:
    """Raise ValueError unless MIN_LEVEL <= min_ops <= max_ops <= MAX_LEVEL."""
    if not MIN_LEVEL <= min_ops <= max_ops <= MAX_LEVEL:
        raise ValueError(
            f"need {MIN_LEVEL} <= min_ops <= max_ops <= {MAX_LEVEL}, got {min_ops}, {max_ops}")


def _stream(seed: int, min_ops: int, max_ops: int) -> Iterator[Problem]:
    check_levels(min_ops, max_ops)
    rng = random.Random(seed)
    index = 0
    while True:
        level = rng.randint(min_ops, max_ops)
        yield _problem(rng, level, f"arith-train-{seed}-{index}")
        index += 1


def generate(n: int, seed: int, min_ops: int = MIN_LEVEL, max_ops: int = MAX_LEVEL) -> list[Problem]:
    """`n` problems, the same for the same arguments; levels uniform in [min_ops, max_ops]."""
    stream = _stream(seed, min_ops, max_ops)
    return [next(stream) for _ in range(n)]


@functools.lru_cache(maxsize=1)
def _test_split() -> tuple[Problem, ...]:
    rng = random.Random(TEST_SEED)
    problems, seen = [], set()
    levels = range(MIN_LEVEL, MAX_LEVEL + 1)
    while len(problems) < TEST_SIZE:
        level = levels[len(problems) % len(levels)]
        problem = _problem(rng, level, f"arith-test-{len(problems)}")
        if problem.solution not in seen:
            seen.add(problem.solution)
            problems.append(problem)
    return tuple(problems)


def test_split() -> list[Problem]:
    """The fixed held-out split (see the module docstring)."""
    return list(_test_split())


# Keep pytest from collecting the function above as a test when it is imported.
test_split.__test__ = False

# A seed no training stage draws its problems from (SFT uses 0, PRM labels 1).
VALIDATION_SEED = 2
VALIDATION_SIZE = 500


def validation_split() -> list[Problem]:
    """VALIDATION_SIZE training-distribution problems from VALIDATION_SEED: for
    tuning search (e.g. `openr eval --fit-auto`) without touching the test split.
    Held out from training by seed, not checked against its problems, so a few
    short chains may repeat one that SFT saw."""
    return train_problems(VALIDATION_SIZE, seed=VALIDATION_SEED)


@functools.lru_cache(maxsize=1)
def _test_solutions() -> frozenset[str]:
    # The solution encodes the whole chain, so equal questions imply equal
    # solutions: filtering on solutions also filters on question text.
    return frozenset(problem.solution for problem in _test_split())


@functools.lru_cache(maxsize=1)
def _validation_solutions() -> frozenset[str]:
    return frozenset(problem.solution for problem in validation_split())


def train_problems(n: int, seed: int, min_ops: int = MIN_LEVEL,
                   max_ops: int = MAX_LEVEL, without_validation: bool = False) -> list[Problem]:
    """Like `generate`, minus any problem whose arithmetic is in the test split
    (and, with `without_validation`, in the validation split: for a stage whose
    runs are chosen on it, such as RL)."""
    held_out = _test_solutions() | (_validation_solutions() if without_validation else frozenset())
    kept = []
    for problem in _stream(seed, min_ops, max_ops):
        if len(kept) == n:
            break
        if problem.solution not in held_out:
            kept.append(problem)
    return kept


def check_step(step_text: str) -> bool | None:
    """Whether every "a op b = c" in a step is arithmetically right; None if it has none."""
    equations = _EQUATION.findall(step_text)
    if not equations:
        return None
    for left, op, right, claimed in equations:
        result = _apply(int(left), _OPERATOR_ALIASES.get(op, op), int(right))
        if result is None or result != int(claimed):
            return False
    return True


def _parse_chain_step(step: str) -> tuple[int, str, int]:
    match = _EQUATION.fullmatch(step)
    if match is None:
        raise ValueError(f"not an arithmetic step of a generated solution: {step!r}")
    left, op, right, _ = match.groups()
    return int(left), _OPERATOR_ALIASES.get(op, op), int(right)


def corrupt_step(solution: str, step_index: int, rng: random.Random) -> str:
    """The solution with step `step_index` given a wrong result, later steps following it.

    Only that step fails `check_step`: later steps redo their operation on the
    wrong running value, so the boxed answer changes too. The error is a nonzero
    multiple of the product of all later divisors, which keeps every later
    division exact; and each operation is injective (operands are nonzero), so
    the final answer always differs from the gold one.
    """
    steps = split_steps(solution)
    chain = [_parse_chain_step(step) for step in steps[:-1]]
    if not 0 <= step_index < len(chain):
        raise ValueError(f"step_index {step_index} is not one of the {len(chain)} arithmetic steps")
    later_divisors = 1
    for _, op, operand in chain[step_index + 1:]:
        if op == "/":
            later_divisors *= operand
    error = rng.choice((-1, 1)) * rng.randint(1, MAX_CORRUPTION_MULTIPLE) * later_divisors
    left, op, right = chain[step_index]
    value = _apply(left, op, right) + error
    rebuilt = steps[:step_index] + [f"{left} {op} {right} = {value}"]
    for _, op, operand in chain[step_index + 1:]:
        result = _apply(value, op, operand)
        rebuilt.append(f"{value} {op} {operand} = {result}")
        value = result
    rebuilt.append(f"The answer is \\boxed{{{value}}}")
    return STEP_SEPARATOR.join(rebuilt)
