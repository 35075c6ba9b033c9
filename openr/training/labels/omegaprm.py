"""OmegaPRM step labels (Luo et al. 2024, "Improve Mathematical Reasoning in
Language Models by Automated Process Supervision").

Math-Shepherd pays k completions for every step of a solution. OmegaPRM instead
binary-searches a wrong solution for its first wrong step, so it pays for about
log2(steps) Monte Carlo estimates per solution, and spends a per-problem rollout
budget where it is most informative, choosing among wrong rollouts by a PUCT-like
score over a tree of prefixes.

The algorithm: the tree's nodes are prefixes (states) with a Monte Carlo value
MC(s) from k rollouts. Wrong rollouts of states with 0 < MC(s) < 1 form the
candidate pool. Each round selects the pair maximising Q(s, r) + U(s), with
Q(s, r) = alpha^(1 - MC(s)) * beta^(len(r) / L) (short rollouts from nearly-right
states first: most likely a single clear mistake) and U(s) = c_puct *
sqrt(sum of N) / (1 + N(s)) (N counts selections of a state), then binary-searches
r: a prefix s + r[:m] with MC > 0 moves the search right, MC = 0 moves it left.
Every prefix it estimates becomes a node, whose own wrong rollouts join the pool.
Labels: soft = MC, hard = MC > 0.

Departures from the paper:
- The budget counts sampled completions, the root's k included, and a search
  starts only if its worst case (ceil(log2 len(r)) estimates) fits in what is
  left, so the budget is never exceeded; there is no separate search-count cap.
- len(r) and L are in generated tokens.
- A prefix met again (same steps) reuses its estimate rather than paying twice.
- Output. The paper keeps (prefix, MC) pairs; TRL's format wants whole step
  sequences, so each record is a path: a searched wrong rollout (all its steps)
  or a distinct correct rollout, after the steps of the state it came from.
  Steps whose own prefix was not estimated get inferred values: before the first
  error, the MC of the shortest estimated (or finished) prefix containing the
  step; from the first error on, 0, since a wrong step stays wrong. `measured`
  marks the steps whose value was estimated from their own prefix. Wrong
  rollouts never searched give no record: their first error is unknown.
"""

from __future__ import annotations

import math
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

METHOD = "omegaprm"

Prefix = tuple[str, ...]


@dataclass(frozen=True)
class OmegaPRMConfig(RolloutConfig):
    """OmegaPRM settings: the shared rollout settings plus the search's. alpha, beta,
    L and c_puct default to the paper's values, the budget to OpenR's example."""

    alpha: float = field(default=0.5, metadata={"help": "Q's preference for states with a high MC, in (0, 1]."})
    beta: float = field(default=0.9, metadata={"help": "Q's preference for short rollouts, in (0, 1]."})
    length_scale: int = field(default=500, metadata={"help": "L: rollout length, in tokens, over which beta "
                                                              "applies once."})
    c_puct: float = field(default=0.125, metadata={"help": "Weight of the exploration bonus U(s)."})
    rollout_budget: int = field(default=100, metadata={"help": "Sampled completions per problem, root "
                                                                "estimate included; at least k."})

    def __post_init__(self):
        super().__post_init__()
        if not (0 < self.alpha <= 1 and 0 < self.beta <= 1):
            raise ValueError("alpha and beta must be in (0, 1]")
        if self.length_scale < 1 or self.c_puct < 0:
            raise ValueError("need length_scale >= 1 and c_puct >= 0")
        if self.rollout_budget < self.k:
            raise ValueError(f"rollout_budget {self.rollout_budget} cannot pay for the root's k={self.k} rollouts")


@dataclass
class _Node:
    """A state of the search tree: a prefix and its Monte Carlo estimate."""

    steps: Prefix
    mc: float
    visits: int = 0


def search_cost(num_steps: int, k: int) -> int:
    """Completions a binary search of a rollout of `num_steps` steps may need at most: k per estimate."""
    return k * math.ceil(math.log2(num_steps))


class _Search:
    """One problem's tree, candidate pool and labelled paths."""

    def __init__(self, rollouts: ProblemRollouts, config: OmegaPRMConfig):
        self.rollouts, self.config = rollouts, config
        self.nodes: dict[Prefix, _Node] = {}
        self.pool: list[tuple[_Node, Rollout]] = []
        self.queued: set[Prefix] = set()  # paths ever put in the pool
        # Each labelled path, with the index of its first wrong step (None: correct).
        self.paths: dict[Prefix, int | None] = {}

    async def node(self, steps: Prefix) -> _Node:
        """The node for `steps`, estimated from k rollouts the first time it is met."""
        if steps in self.nodes:
            return self.nodes[steps]
        estimate = (await self.rollouts.estimate([steps]))[0]
        node = self.nodes[steps] = _Node(steps, estimate.mc)
        for rollout in estimate.rollouts:
            path = steps + rollout.steps
            if rollout.correct and path:
                self.paths.setdefault(path, None)
            elif 0 < node.mc < 1 and rollout.steps and path not in self.queued:
                # A path met again (k identical samples, say) would be searched for nothing.
                self.queued.add(path)
                self.pool.append((node, rollout))
        return node

    def score(self, node: _Node, rollout: Rollout) -> float:
        c = self.config
        q = c.alpha ** (1 - node.mc) * c.beta ** (rollout.num_tokens / c.length_scale)
        total_visits = sum(n.visits for n in self.nodes.values())
        return q + c.c_puct * math.sqrt(total_visits) / (1 + node.visits)

    def select(self) -> tuple[_Node, Rollout] | None:
        """The best candidate whose worst-case search fits in the budget left, or None."""
        left = self.config.rollout_budget - self.rollouts.usage.completions
        affordable = [c for c in self.pool if search_cost(len(c[1].steps), self.config.k) <= left]
        return max(affordable, key=lambda c: self.score(*c), default=None)

    async def first_error(self, node: _Node, rollout: Rollout) -> int:
        """Index, in node.steps + rollout.steps, of the first wrong step of `rollout`."""
        good, bad = 0, len(rollout.steps)  # steps of the rollout: none (MC(node) > 0), all (it is wrong)
        while bad - good > 1:
            middle = (good + bad) // 2
            probe = await self.node(node.steps + rollout.steps[:middle])
            if probe.mc > 0:
                good = middle
            else:
                bad = middle
        return len(node.steps) + good

    async def run(self) -> None:
        await self.node(())
        while (candidate := self.select()) is not None:
            self.pool.remove(candidate)
            node, rollout = candidate
            node.visits += 1
            path = node.steps + rollout.steps
            self.paths[path] = await self.first_error(node, rollout)

    def values(self, path: Prefix, first_error: int | None) -> tuple[list[float], list[bool]]:
        """Each step's MC value along `path`, and whether it was estimated from its own prefix."""
        known = {m: self.nodes[path[:m]].mc for m in range(1, len(path)) if path[:m] in self.nodes}
        known[len(path)] = 0.0 if first_error is not None else 1.0  # the finished rollout, graded
        mc, measured = [], []
        for i in range(len(path)):
            if first_error is not None and i >= first_error:
                mc.append(0.0)
            else:
                mc.append(known[min(m for m in known if m > i)])
            measured.append(i + 1 in known)
        return mc, measured

    def records(self, problem: Problem) -> list[dict]:
        records = []
        for path, first_error in self.paths.items():
            mc, measured = self.values(path, first_error)
            records.append(make_record(problem, METHOD, path, mc, measured, self.config.label_type))
        return records


async def label_problem(policy: ChatPolicy, problem: Problem, config: OmegaPRMConfig,
                        completer: Policy | None = None) -> ProblemLabels:
    """Run OmegaPRM's search on `problem` within its rollout budget and label the paths
    found (root solutions by the policy, every other rollout by `completer` if given)."""
    rollouts = await ProblemRollouts.open(policy, problem, config, completer)
    search = _Search(rollouts, config)
    await search.run()
    return ProblemLabels(search.records(problem), rollouts.usage)
