"""Monte Carlo tree search over reasoning steps, with PUCT selection and PRM values.

Where beam search commits depth by depth, MCTS keeps revisiting earlier steps:
visit counts and backed-up PRM values decide which partial solution to grow
next, so a promising branch that later scores badly gets abandoned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from openr.contracts import Policy, Step, StepScorer
from openr.search.aggregation import AGGREGATIONS, Aggregation
from openr.search.budget import Budget
from openr.search.candidates import BudgetReason, Candidate, SearchProblem, SearchResult
from openr.search.config import MAX_SAMPLES, PrmGuidedConfig, SearchConfigError, check_float, check_int
from openr.search.metered import MeteredPolicy, MeteredScorer, conclude, require_prm

DEFAULT_CHILDREN = 4
DEFAULT_SIMULATIONS = 16
# AlphaZero's constant; the scale matches values in [0, 1].
DEFAULT_C_PUCT = 1.25
MAX_SIMULATIONS = 1024
MAX_C_PUCT = 100.0


@dataclass(frozen=True)
class MctsConfig(PrmGuidedConfig):
    BUDGET_OPTION: ClassVar[str | None] = "num_simulations"

    n_children: int = DEFAULT_CHILDREN  # steps sampled when a node is expanded
    num_simulations: int = DEFAULT_SIMULATIONS  # selection-expansion-backup rounds
    c_puct: float = DEFAULT_C_PUCT  # weight of the prior-driven exploration term
    # Evaluate a new node by sampling the rest of its solution and taking the
    # PRM's last-step score, instead of the PRM score of the node's own step.
    rollout: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_children", self.n_children, 1, MAX_SAMPLES)
        check_int("num_simulations", self.num_simulations, 1, MAX_SIMULATIONS)
        check_float("c_puct", self.c_puct, 0.0, MAX_C_PUCT)
        if not isinstance(self.rollout, bool):
            raise SearchConfigError("rollout", f"rollout must be true or false, got {self.rollout!r}")

    @property
    def samples(self) -> int:
        return self.n_children * self.num_simulations


@dataclass(eq=False)
class Node:
    """A tree node; the path from the root to it is `candidate`.

    `value` is the node's own evaluation; `visits` and `value_sum` are what
    backups have added up through it.
    """

    candidate: Candidate
    prior: float = 1.0
    value: float = 0.0
    terminal: bool = False
    visits: int = 0
    value_sum: float = 0.0
    children: list[Node] = field(default_factory=list)

    @property
    def mean_value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


def puct(parent: Node, child: Node, c_puct: float) -> float:
    """AlphaZero's PUCT: mean value plus prior-weighted exploration."""
    return child.mean_value + c_puct * child.prior * math.sqrt(parent.visits) / (1 + child.visits)


def select_path(root: Node, c_puct: float) -> list[Node]:
    """From the root, follow the highest-PUCT child down to a node without children."""
    path = [root]
    while path[-1].children:
        parent = path[-1]
        path.append(max(parent.children, key=lambda child: puct(parent, child, c_puct)))
    return path


def backup(path: list[Node], value: float) -> None:
    """Add one visit and `value` to every node on `path`."""
    for node in path:
        node.visits += 1
        node.value_sum += value


def sibling_priors(steps: list[Step]) -> list[float]:
    """Softmax over siblings of each step's mean token logprob.

    Normalising by length keeps long steps from losing prior just for being
    long; engines that report no logprobs (all 0) get uniform priors.
    """
    per_token = [step.logprob / max(step.num_tokens, 1) for step in steps]
    top = max(per_token)
    weights = [math.exp(x - top) for x in per_token]
    total = sum(weights)
    return [weight / total for weight in weights]


def most_visited_leaf(root: Node) -> Node:
    node = root
    while node.children:
        node = max(node.children, key=lambda child: child.visits)
    return node


class SearchTree:
    """The tree of one MCTS run, and every complete solution it has produced."""

    def __init__(self, problem: SearchProblem, sampler: MeteredPolicy, scorer: MeteredScorer,
                 aggregation: Aggregation, config: MctsConfig):
        self.root = Node(problem.empty())
        self.solutions: list[Candidate] = []
        self._problem = problem
        self._sampler = sampler
        self._scorer = scorer
        self._aggregation = aggregation
        self._config = config

    async def simulate(self) -> None:
        """One simulation: select a leaf, expand and evaluate it, back up the values.

        Departs from AlphaZero's single-leaf step: expansion evaluates all
        `n_children` new nodes in one batched PRM call, and each one's value is
        backed up along its own path. A selected terminal node is not expanded;
        its value is backed up again.
        """
        path = select_path(self.root, self._config.c_puct)
        leaf = path[-1]
        if leaf.terminal:
            backup(path, leaf.value)
            return
        for child in await self._expand(leaf):
            backup(path + [child], child.value)

    async def _expand(self, leaf: Node) -> list[Node]:
        [steps] = await self._sampler.sample_steps([self._problem.prefix(leaf.candidate.steps)],
                                                   self._config.n_children)
        if not steps:
            return []
        depth = len(leaf.candidate.steps) + 1
        paths = [leaf.candidate.extend(step) for step in steps]
        terminal = [path.ended or depth >= self._config.max_steps for path in paths]
        evaluated = list(paths)
        if self._config.rollout:
            evaluated = await self._roll_out(paths, terminal, depth)
        scored = await self._scorer.score(evaluated)
        for path, is_terminal, prior, result in zip(paths, terminal, sibling_priors(steps), scored):
            if result is None:
                continue
            own_scores = result.step_scores[:depth]
            node = Node(path.scored(list(own_scores), self._aggregation.score(own_scores)),
                        prior=prior, value=result.step_scores[-1], terminal=is_terminal)
            leaf.children.append(node)
            if is_terminal:
                self.solutions.append(node.candidate)
            elif self._config.rollout:
                self.solutions.append(result)
        return leaf.children

    async def _roll_out(self, paths: list[Candidate], terminal: list[bool], depth: int) -> list[Candidate]:
        """Each open path continued to the end in one batched policy call; terminal
        paths are already complete and stand for themselves."""
        open_paths = [path for path, is_terminal in zip(paths, terminal) if not is_terminal]
        max_tokens = (self._config.max_steps - depth) * self._config.max_step_tokens
        rows = await self._sampler.sample_solutions([self._problem.prefix(p.steps) for p in open_paths], 1,
                                                    max_tokens)
        completions = iter(row[0] for row in rows)
        return [path if is_terminal else path.continue_with(next(completions))
                for path, is_terminal in zip(paths, terminal)]

    async def finish(self) -> None:
        """With no complete solution yet, continue the most visited path to its end
        in `n_children` rollouts (one policy call) and score them, so the answer is
        a whole solution, chosen by the PRM, rather than the first steps of one:
        few simulations rarely reach the end of a chain.

        One rollout used to be the answer on most arith problems, and a sampled
        chain of five steps often goes wrong where the PRM can see it (its steps
        scored 0.06 after 0.85) but had nothing else to pick: 32.5% against greedy's
        36.5%. On 60 arith validation problems, n_children rollouts took it from
        46.7% to 51.7% (greedy 45.0%); one greedy rollout, or a smaller c_puct
        (a deeper tree), did not help (46.7%, 45.0%)."""
        tip = most_visited_leaf(self.root)
        depth = len(tip.candidate.steps)
        if self.solutions or not depth or tip.terminal:
            return
        max_tokens = (self._config.max_steps - depth) * self._config.max_step_tokens
        [row] = await self._sampler.sample_solutions([self._problem.prefix(tip.candidate.steps)],
                                                     self._config.n_children, max_tokens)
        scored = await self._scorer.score([tip.candidate.continue_with(completion) for completion in row])
        self.solutions += [solution for solution in scored if solution is not None]

    def final_candidates(self) -> list[Candidate]:
        """Every complete solution, or, when none exists yet, the most visited path."""
        if self.solutions:
            return self.solutions
        tip = most_visited_leaf(self.root)
        return [tip.candidate] if tip.candidate.steps else []


async def run(
    problem: SearchProblem, policy: Policy, prm: StepScorer | None, config: MctsConfig, budget: Budget
) -> SearchResult:
    """Up to `num_simulations` simulations, fewer if the budget runs out.

    The answer is the best complete solution (terminal leaves and, with
    `rollout`, the rollouts) ranked by `config.aggregation` over its step
    scores, not the most visited path: the PRM's judgement of whole solutions
    is what the other strategies select by too. When the simulations end with
    no complete solution, the most visited path is rolled out to its end
    (`n_children` times, the PRM choosing among them); when
    a budget ends them, that path is returned as it is.
    """
    aggregation = AGGREGATIONS[config.aggregation]
    scorer = MeteredScorer(require_prm(prm, "mcts"), problem.question, aggregation, budget)
    sampler = MeteredPolicy(policy, config, budget, problem.step_separator)
    tree = SearchTree(problem, sampler, scorer, aggregation, config)
    stop_reason: BudgetReason | None = None
    for _ in range(config.num_simulations):
        stop_reason = budget.exhausted()
        if stop_reason:
            break
        await tree.simulate()
        budget.record_progress(tree.final_candidates(), aggregation)
    if stop_reason is None:
        await tree.finish()
    return conclude(problem, tree.final_candidates(), aggregation, budget, stop_reason)
