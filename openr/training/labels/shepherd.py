"""Math-Shepherd step labels (Wang et al. 2024, "Math-Shepherd: Verify and Reinforce
LLMs Step-by-step without Human Annotations").

The policy samples its own solutions; every step of each is labelled by completing
the solution from just after that step `k` times: the hard label says whether any
completion reaches the gold answer, the soft label is the fraction that do. It
needs no human labels and measures every step, at k completions per step.

Departures from the paper:
- The last step of a solution is labelled by grading that solution instead of
  completing it: the policy already finished it, so its one completion is itself.
- Identical sampled solutions are labelled once, and a prefix shared by several
  solutions is estimated once; repeats would cost calls and add no information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openr.contracts import Policy
from openr.tasks.problem import Problem
from openr.training.labels.monte_carlo import (
    ChatPolicy,
    ProblemLabels,
    ProblemRollouts,
    Rollout,
    RolloutConfig,
    make_record,
)

METHOD = "math_shepherd"


@dataclass(frozen=True)
class ShepherdConfig(RolloutConfig):
    """Math-Shepherd settings: the shared rollout settings plus how many solutions to label."""

    samples_per_problem: int = field(default=4, metadata={"help": "Solutions sampled per problem; each distinct "
                                                                   "one has all its steps labelled."})

    def __post_init__(self):
        super().__post_init__()
        if self.samples_per_problem < 1:
            raise ValueError("samples_per_problem must be positive")


def _distinct(solutions: list[Rollout]) -> list[Rollout]:
    """Non-empty solutions, first occurrence of each step sequence only."""
    first: dict[tuple[str, ...], Rollout] = {}
    for solution in solutions:
        if solution.steps:
            first.setdefault(solution.steps, solution)
    return list(first.values())


async def label_problem(policy: ChatPolicy, problem: Problem, config: ShepherdConfig,
                        completer: Policy | None = None) -> ProblemLabels:
    """Sample solutions to `problem` and label every step of each distinct one
    (continuations by `completer`, the policy unless given)."""
    rollouts = await ProblemRollouts.open(policy, problem, config, completer)
    solutions = _distinct(await rollouts.solutions(config.samples_per_problem))
    # Every proper prefix (ending after step i < last) of every solution, once, in one batched call.
    prefixes = list(dict.fromkeys(s.steps[:i] for s in solutions for i in range(1, len(s.steps))))
    values = {prefix: estimate.mc for prefix, estimate in zip(prefixes, await rollouts.estimate(prefixes))}
    records = []
    for solution in solutions:
        mc = [values[solution.steps[:i]] for i in range(1, len(solution.steps))] + [float(solution.correct)]
        records.append(make_record(problem, METHOD, solution.steps, mc, [True] * len(mc), config.label_type))
    return ProblemLabels(records, rollouts.usage)
