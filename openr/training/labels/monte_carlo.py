"""Monte Carlo rollouts from solution prefixes: the measurement that both automatic
step labellers (Math-Shepherd, OmegaPRM) are built on.

A step is judged by how often the policy, continuing from the solution written up
to and including that step, reaches the gold answer. This module samples those
continuations (one batched `generate_steps` call per batch of prefixes, so the
engine can batch them), grades them, and counts what it spent, so labellers can be
compared by cost.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from openr.contracts import Policy, Step
from openr.engine.base import PreparedPrompt
from openr.tasks.grading import is_correct
from openr.tasks.problem import STEP_SEPARATOR, Problem, split_steps

LABEL_TYPES = ("hard", "soft")
# Per-call sampling seeds are drawn below this; the engine numbers the samples of a
# call seed, seed + 1, ..., so calls rarely share a seed.
SEED_RANGE = 2**31


@dataclass(frozen=True)
class RolloutConfig:
    """Settings every rollout-based labeller shares."""

    k: int = field(default=8, metadata={"help": "Completions sampled per prefix to estimate its Monte Carlo "
                                                 "value (the fraction that reach the gold answer)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of solutions and completions."})
    max_tokens: int = field(default=320, metadata={"help": "Token budget of one sample (a whole solution or "
                                                            "the rest of one)."})
    label_type: str = field(default="hard", metadata={"help": "What goes in `labels`: 'hard' (True when any "
                                                               "completion is correct) or 'soft' (the fraction)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling seeds; a problem's samples depend only "
                                                    "on it and the problem id, not on scheduling."})
    max_concurrent_problems: int = field(default=4, metadata={"help": "Problems labelled at once, so the "
                                                                       "engine batches rollouts across them."})
    step_separator: str = field(default=STEP_SEPARATOR, metadata={
        "help": "What the policy writes between reasoning steps: its rollouts are split into the steps labelled "
                "there, and each prefix continued ends with it. Backslash escapes read, as `openr serve "
                "--step-separator`: '\\n' for a chat model that writes a step a line (blank lines between "
                "steps are dropped). Default: '\\n\\n', a blank line."})

    def __post_init__(self):
        if self.k < 1 or self.max_tokens < 1 or self.max_concurrent_problems < 1:
            raise ValueError("k, max_tokens and max_concurrent_problems must be positive")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {self.label_type!r}")
        if not self.step_separator:
            raise ValueError("step_separator cannot be empty")


class ChatPolicy(Policy, Protocol):
    """A policy that also renders the chat prompt its continuations start from (every `Engine` does)."""

    async def prepare_chat(self, messages: list[dict]) -> PreparedPrompt:
        ...


@dataclass
class Usage:
    """What a labeller spent: sampled completions (policy calls) and generated tokens."""

    completions: int = 0
    tokens: int = 0

    def add(self, other: Usage) -> None:
        self.completions += other.completions
        self.tokens += other.tokens


@dataclass(frozen=True)
class Rollout:
    """One sampled continuation of a prefix, split into steps and graded as a whole solution."""

    steps: tuple[str, ...]
    correct: bool
    num_tokens: int


@dataclass(frozen=True)
class Estimate:
    """Monte Carlo value of one prefix: the fraction of its rollouts that are correct."""

    mc: float
    rollouts: tuple[Rollout, ...]


@dataclass(frozen=True)
class ProblemLabels:
    """What labelling one problem produced: TRL stepwise records, and its cost."""

    records: list[dict]
    usage: Usage


def make_record(problem: Problem, method: str, steps: Sequence[str], mc: Sequence[float],
                measured: Sequence[bool], label_type: str) -> dict:
    """One line of the output in TRL's stepwise format, plus the evidence behind its labels.

    `mc` is each step's soft label; the hard label is `mc > 0` (some completion
    reached the answer). `measured` says which values were estimated from that
    very prefix rather than inferred from a neighbour (OmegaPRM).
    """
    labels = [value > 0 for value in mc] if label_type == "hard" else [float(value) for value in mc]
    return {"prompt": problem.question, "completions": list(steps), "labels": labels, "id": problem.id,
            "method": method, "mc": [float(value) for value in mc], "measured": list(measured)}


class ProblemRollouts:
    """Sampling and grading for one problem: the rendered prompt, the gold answer,
    a seed stream of its own, and the usage it has run up.

    The policy writes the solutions being labelled; the completer (the policy
    itself unless another is given, as in Math-Shepherd's paper) writes the
    continuations that estimate each prefix. A completer stronger than the policy
    makes the estimate say "is this prefix right?" rather than "can this weak
    policy still finish it?". It must continue the policy's prompt format: the
    same chat template and step separator (`config.step_separator`).
    """

    def __init__(self, policy: ChatPolicy, problem: Problem, prompt: str, config: RolloutConfig,
                 completer: Policy | None = None):
        self.policy, self.problem, self.prompt, self.config = policy, problem, prompt, config
        self.completer = completer if completer is not None else policy
        # Seeded from the problem, so results do not depend on which problems share the engine.
        self._seeds = random.Random(f"{config.seed}/{problem.id}")
        self.usage = Usage()

    @classmethod
    async def open(cls, policy: ChatPolicy, problem: Problem, config: RolloutConfig,
                   completer: Policy | None = None) -> ProblemRollouts:
        prepared = await policy.prepare_chat([{"role": "user", "content": problem.question}])
        return cls(policy, problem, prepared.text, config, completer)

    def prefix(self, steps: Sequence[str]) -> str:
        """The text the policy continues after `steps`: the chat prompt, the steps, and a
        separator so the next thing it writes is a new step. No steps: the prompt alone."""
        if not steps:
            return self.prompt
        separator = self.config.step_separator
        return self.prompt + separator.join(steps) + separator

    async def sample(self, prefixes: Sequence[Sequence[str]], n: int, model: Policy | None = None
                     ) -> list[list[Rollout]]:
        """`n` graded completions to the end of every prefix, in one batched call to
        `model` (the policy unless given)."""
        if not prefixes:
            return []
        model = model if model is not None else self.policy
        outputs = await model.generate_steps(
            [self.prefix(steps) for steps in prefixes], n=n, stop=[], max_tokens=self.config.max_tokens,
            temperature=self.config.temperature, seed=self._seeds.randrange(SEED_RANGE))
        return [[self._graded(steps, out) for out in samples] for steps, samples in zip(prefixes, outputs)]

    def _graded(self, prefix_steps: Sequence[str], out: Step) -> Rollout:
        self.usage.completions += 1
        self.usage.tokens += out.num_tokens
        # Grade the whole solution: a completion of a prefix that already holds the
        # answer may add nothing, and the last \boxed{} wins either way.
        separator = self.config.step_separator
        text = separator.join([*prefix_steps, out.text])
        return Rollout(tuple(split_steps(out.text, separator)), is_correct(text, self.problem.answer, lenient=False),
                       out.num_tokens)

    async def solutions(self, n: int) -> list[Rollout]:
        """`n` whole solutions sampled from the question."""
        return (await self.sample([()], n))[0]

    async def estimate(self, prefixes: Sequence[Sequence[str]]) -> list[Estimate]:
        """The Monte Carlo value of every prefix from `k` rollouts each, in one batched
        call to the completer (the bare question's rollouts are the policy's)."""
        if self.completer is self.policy or all(prefixes):
            samples = await self.sample(prefixes, self.config.k, self.completer)
        else:  # a rollout from the bare question is a whole solution: the policy's to write
            rest = iter(await self.sample([p for p in prefixes if p], self.config.k, self.completer))
            roots = (await self.sample([()], self.config.k))[0]
            samples = [next(rest) if prefix else roots for prefix in prefixes]
        return [Estimate(sum(r.correct for r in rollouts) / len(rollouts), tuple(rollouts)) for rollouts in samples]
