"""The policy and the PRM as strategies call them: every call charged to the budget.

Strategies never touch `Budget` arithmetic or sampling settings directly; these
wrappers apply the config's sampling settings, cap each call by what the budget
has left, hand out seeds, and count what was spent, seconds awaited included.
`conclude` turns the candidates a strategy ends with into its `SearchResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from openr.contracts import Policy, ScorerInputTooLong, Step, StepScorer, TokenMonitor
from openr.search.aggregation import Aggregation
from openr.search.budget import Budget
from openr.search.candidates import Candidate, SearchProblem, SearchResult, StopReason
from openr.search.config import SearchConfig, SearchConfigError
from openr.tasks.problem import STEP_SEPARATOR


class MeteredPolicy:
    """`Policy.generate_steps` with the config's sampling settings and the budget's caps.

    Seeds count up across the whole search (the engine gives sample i of a call
    seed + i), so no two samples of a seeded search share a seed.
    """

    def __init__(self, policy: Policy, config: SearchConfig, budget: Budget, step_separator: str = STEP_SEPARATOR):
        self._policy = policy
        self._config = config
        self._budget = budget
        self._next_seed = config.seed
        self._step_separator = step_separator

    async def sample_steps(self, prefixes: Sequence[str], n: int) -> list[list[Step]]:
        """`n` next steps for each prefix, each up to the step separator."""
        return await self._sample(prefixes, n, [self._step_separator], self._config.max_step_tokens)

    async def sample_solutions(self, prefixes: Sequence[str], n: int, max_tokens: int,
                               temperature: float | None = None, top_logprobs: int = 0,
                               monitor: Callable[[], TokenMonitor] | None = None) -> list[list[Step]]:
        """`n` continuations of each prefix to the end of the solution, in one
        call, at `temperature` (default: the config's); with `top_logprobs`,
        carrying their tokens' log-probabilities, and halted where `monitor`'s
        monitors say (a halted sample's tokens are charged like any other's)."""
        logprobs = {"top_logprobs": top_logprobs, "monitor": monitor} if top_logprobs or monitor else {}
        return await self._sample(prefixes, n, [], max_tokens, temperature, **logprobs)

    async def _sample(
        self, prefixes: Sequence[str], n: int, stop: list[str], max_tokens: int, temperature: float | None = None,
        **logprobs,
    ) -> list[list[Step]]:
        if not prefixes:
            return []
        samples = len(prefixes) * n
        cap = self._budget.token_cap(max_tokens, samples)
        seed = self._next_seed
        if seed is not None:
            self._next_seed = seed + samples
        with self._budget.policy_wait.timed():
            rows = await self._policy.generate_steps(
                prefixes, n, stop, cap, self._config.temperature if temperature is None else temperature,
                self._config.top_p, seed, **logprobs
            )
        self._budget.charge_tokens(sum(step.num_tokens for row in rows for step in row))
        if cap < max_tokens and any(step.finish_reason == "length" for row in rows for step in row):
            self._budget.record_cut("tokens")
        return rows


class MeteredScorer:
    """`StepScorer.score` for one question, aggregated and capped by the PRM budget."""

    def __init__(self, prm: StepScorer, question: str, aggregation: Aggregation, budget: Budget):
        self._prm = prm
        self._question = question
        self._aggregation = aggregation
        self._budget = budget

    async def score(self, candidates: Sequence[Candidate]) -> list[Candidate | None]:
        """Scored copies of `candidates`, aligned with them, in one PRM call.

        Candidates with no steps come back unscored without being sent. Those
        beyond what the PRM budget allows, or too long for the PRM's context,
        come back as None: unscored, they cannot be ranked, so strategies drop them.
        """
        with_steps = [i for i, candidate in enumerate(candidates) if candidate.steps]
        allowed = self._budget.prm_cap(len(with_steps))
        if allowed < len(with_steps):
            self._budget.record_cut("prm_calls")
        to_score = with_steps[:allowed]
        scores: list[list[float] | None] = []
        if to_score:
            try:
                scores = await self._scored([list(candidates[i].steps) for i in to_score])
            except ScorerInputTooLong:
                # Some candidate outgrew the PRM's context: score each alone, drop those that do not fit.
                scores = [await self._score_alone(candidates[i]) for i in to_score]
                self._budget.record_cut("context")
            self._budget.charge_prm(len(to_score))
        scored: list[Candidate | None] = [c if not c.steps else None for c in candidates]
        for i, step_scores in zip(to_score, scores):
            if step_scores is not None:
                scored[i] = candidates[i].scored(step_scores, self._aggregation.score(step_scores))
        return scored

    async def _score_alone(self, candidate: Candidate) -> list[float] | None:
        try:
            [step_scores] = await self._scored([list(candidate.steps)])
        except ScorerInputTooLong:
            return None
        return step_scores

    async def _scored(self, steps: list[list[str]]) -> list[list[float]]:
        with self._budget.prm_wait.timed():
            return await self._prm.score(self._question, steps)


def require_prm(prm: StepScorer | None, strategy: str) -> StepScorer:
    """The PRM of a strategy whose config `needs_prm`; a guard for callers that
    run a strategy directly (the server refuses such requests before any sampling)."""
    if prm is None:
        raise SearchConfigError("strategy", f"{strategy} needs a PRM, and none is loaded")
    return prm


def conclude(
    problem: SearchProblem,
    candidates: Sequence[Candidate],
    aggregation: Aggregation,
    budget: Budget,
    stop_reason: StopReason | None,
    decisions: dict | None = None,
) -> SearchResult:
    """The result of a search of `problem` that ended with `candidates`, their
    answers read and ranked; `stop_reason` is the limit that stopped its loop,
    if one did, and `decisions` what the search decided on the way."""
    answered = [candidate.with_answer(problem.extract_answer) for candidate in candidates]
    if stop_reason in (None, "confident") and budget.cut_reason:
        stop_reason = budget.cut_reason  # a cap cut work short: that is what ended it
    return SearchResult(
        candidates=tuple(aggregation.rank_final(answered)),
        tokens_generated=budget.tokens_generated,
        prm_calls=budget.prm_calls,
        stop_reason=stop_reason,
        decisions=dict(decisions or {}),
        timing=budget.timing(),
    )

