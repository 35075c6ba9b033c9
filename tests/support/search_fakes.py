"""Deterministic stand-ins for the policy and the PRM, so search tests can predict
every step a strategy sees and count every call it makes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from openr.contracts import ScorerInputTooLong, Step
from openr.search import STRATEGIES, Budget, SearchProblem
from openr.tasks.grading import extract_answer
from openr.tasks.problem import STEP_SEPARATOR

PROMPT = "<user>Q?</user><assistant>"
PROBLEM = SearchProblem(question="Q?", prompt=PROMPT, extract_answer=extract_answer)
TOKENS_PER_STEP = 10
# A whole-solution sample stops after this many steps even if no step says eos.
MAX_FAKE_SOLUTION_STEPS = 20

StepFunction = Callable[[tuple[str, ...], int], Step]


def tree_step(eos_depth: int) -> StepFunction:
    """Steps named by their lineage ("r.3.7": sample 7, child of sample 3), ending
    the solution at `eos_depth`; a later sample has a lower logprob."""

    def step(path: tuple[str, ...], sample_id: int) -> Step:
        parent = path[-1] if path else "r"
        finish = "eos" if len(path) + 1 >= eos_depth else "step"
        return Step(f"{parent}.{sample_id}", TOKENS_PER_STEP, finish, -float(sample_id))

    return step


def path_of(prefix: str, separator: str = STEP_SEPARATOR) -> tuple[str, ...]:
    """The steps a prefix already holds (it ends with the separator when non-empty)."""
    assert prefix.startswith(PROMPT)
    rest = prefix[len(PROMPT):]
    return tuple(rest.split(separator)[:-1]) if rest else ()


def _capped(step: Step, max_tokens: int) -> Step:
    if step.num_tokens <= max_tokens:
        return step
    return Step(step.text, max_tokens, "length", step.logprob)


@dataclass
class FakePolicy:
    """Sample `i` (counted over the fake's lifetime, so every sample is distinct)
    is `step_fn(path, i)`. Without stop strings a sample runs step after step to
    eos, joined by the separator, as a real engine's whole-solution sample would."""

    step_fn: StepFunction
    on_call: Callable[[], None] = lambda: None
    calls: list[dict] = field(default_factory=list)
    samples_drawn: int = 0
    separator: str = STEP_SEPARATOR  # the policy's own, between steps

    async def generate_steps(
        self, prefixes: Sequence[str], n: int, stop: Sequence[str], max_tokens: int,
        temperature: float, top_p: float = 1.0, seed: int | None = None,
    ) -> list[list[Step]]:
        self.calls.append({"prefixes": list(prefixes), "n": n, "stop": list(stop), "max_tokens": max_tokens,
                           "temperature": temperature, "seed": seed})
        self.on_call()
        rows = []
        for prefix in prefixes:
            row = []
            for _ in range(n):
                path = path_of(prefix, self.separator)
                sample = self._step(path) if stop else self._solution(path)
                row.append(_capped(sample, max_tokens))
                self.samples_drawn += 1
            rows.append(row)
        return rows

    def _step(self, path: tuple[str, ...]) -> Step:
        return self.step_fn(path, self.samples_drawn)

    def _solution(self, path: tuple[str, ...]) -> Step:
        steps: list[Step] = []
        while len(steps) < MAX_FAKE_SOLUTION_STEPS and (not steps or steps[-1].finish_reason != "eos"):
            steps.append(self._step(path + tuple(s.text for s in steps)))
        text = self.separator.join(s.text for s in steps)
        tokens, logprob = sum(s.num_tokens for s in steps), sum(s.logprob for s in steps)
        return Step(text, tokens, steps[-1].finish_reason, logprob)


@dataclass
class FakePRM:
    """Scores each step on its own text, so a step's score never depends on context."""

    score_fn: Callable[[str], float]
    calls: list[list[list[str]]] = field(default_factory=list)

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        self.calls.append([list(c) for c in candidates])
        return [[self.score_fn(step) for step in candidate] for candidate in candidates]


@dataclass
class ShortContextPRM(FakePRM):
    """A FakePRM whose context holds at most `max_steps` steps per candidate: a
    call with a longer candidate raises, as a real PRM's does."""

    max_steps: int = 2

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        if any(len(candidate) > self.max_steps for candidate in candidates):
            self.calls.append([list(c) for c in candidates])
            raise ScorerInputTooLong(f"a candidate has more than {self.max_steps} steps")
        return await super().score(question, candidates)


def score_by_last_id(step: str) -> float:
    """Later samples score higher: "r.3.17" -> 0.17."""
    return int(step.rsplit(".", 1)[1]) / 100


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


def answer_steps(answers: list[str]):
    """Sample i tries once ("try i"), then answers answers[i] and stops."""

    def step(path: tuple[str, ...], sample_id: int) -> Step:
        if not path:
            return Step(f"try {sample_id}", TOKENS_PER_STEP, "step", 0.0)
        tried = int(path[0].split()[1])
        return Step(f"so \\boxed{{{answers[tried]}}}", TOKENS_PER_STEP, "eos", 0.0)

    return step


async def run(strategy: str, config, policy, prm, budget=None, problem: SearchProblem = PROBLEM):
    return await STRATEGIES[strategy].run(problem, policy, prm, config, budget or Budget())
