"""OpenR's MDP over reasoning steps as a gymnasium environment.

The question is the initial state, each action is one reasoning step (text),
and the next state is the question plus the steps so far. Rewards come with
each step: the PRM's score of the new step (`prm`, OpenR's choice), 1/0 for a
correct final answer (`outcome`), or both (`prm+outcome`). Correctness is
exact grading of the answer a step states as final (`\\boxed{}`, GSM8K's
"#### N" or "The answer is N": the rule held-out accuracy and `openr eval`
grade by), never the PRM, so reward hacking shows.

`ReasoningEnv` is one episode with the plain gymnasium API. `VectorReasoningEnv`
steps many episodes at once and scores all their new steps in one PRM call;
`openr.rl.rollout` drives it with one engine call per step of every episode.

Bad actions end the episode, truncated, with reward INVALID_ACTION_REWARD (the
lowest any reward kind gives) and `info["invalid"]` saying why: an empty step
("empty") or a step longer than `max_step_tokens` or cut by the engine's token
limit ("too_long"). A step after the episode ended raises gymnasium's
`ResetNeeded`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import gymnasium
from gymnasium.error import ResetNeeded

from openr.contracts import Step
from openr.tasks.grading import final_answer, is_correct
from openr.tasks.problem import STEP_SEPARATOR, Problem

REWARDS = ("prm", "outcome", "prm+outcome")
INVALID_ACTION_REWARD = 0.0
MAX_OBSERVATION_CHARS = 100_000  # bounds the Text space; real observations are far shorter
TEXT_CHARSET = frozenset(string.printable)


class SyncScorer(Protocol):
    """What the environment needs of a PRM: one score per step of each
    (question, steps) pair, in one call (`openr.prm` scorers have it)."""

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]: ...


@dataclass(frozen=True)
class EnvConfig:
    reward: str = field(default="prm+outcome", metadata={"help": "Reward per step: prm (the PRM's score of the "
                                                                  "new step), outcome (1 for a correct final "
                                                                  "answer, else 0) or prm+outcome (their sum)."})
    max_steps: int = field(default=12, metadata={"help": "Steps before an episode is truncated."})
    max_step_tokens: int = field(default=64, metadata={"help": "Longest valid step in tokens."})
    max_episode_tokens: int = field(default=384, metadata={"help": "Solution tokens before an episode is "
                                                                     "truncated."})
    step_separator: str = field(default=STEP_SEPARATOR, metadata={"help": "What the policy writes between "
                                                                           "steps: a step ends there."})

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        for name in ("max_steps", "max_step_tokens", "max_episode_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not self.step_separator:
            raise ValueError("the step separator cannot be empty")

    @property
    def uses_prm(self) -> bool:
        return self.reward != "outcome"


@dataclass
class Episode:
    """What happened in one episode: the actions (as the engine returned them),
    their rewards, and how it ended; `separator` follows every action that
    ended at a step boundary."""

    problem: Problem
    prompt: str
    separator: str = STEP_SEPARATOR
    actions: list[Step] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    step_scores: list[float | None] = field(default_factory=list)  # the PRM's score of each step, if scored
    terminated: bool = False
    truncated: bool = False
    correct: bool = False
    invalid: str | None = None

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    @property
    def steps(self) -> list[str]:
        return [a.text for a in self.actions]

    @property
    def solution_tokens(self) -> int:
        return sum(a.num_tokens for a in self.actions)

    @property
    def observation(self) -> str:
        return self.prompt + "".join(a.text + self.separator for a in self.actions)


def as_step(action: str | Step, count_tokens: Callable[[str], int]) -> Step:
    """A text action as a Step that ended at the step separator."""
    if isinstance(action, Step):
        return action
    if not isinstance(action, str):
        raise TypeError(f"an action is one reasoning step as text, got {type(action).__name__}")
    return Step(action, count_tokens(action), "step", 0.0)


class ReasoningEnv(gymnasium.Env):
    """One problem at a time; observations and actions are text.

    `prompt_for(question)` renders the text the policy continues (a chat
    template); `count_tokens` measures a text action (a `Step` brings its own count).
    """

    metadata = {"render_modes": []}

    def __init__(self, problems: Sequence[Problem], config: EnvConfig = EnvConfig(),
                 scorer: SyncScorer | None = None, prompt_for: Callable[[str], str] = lambda q: q,
                 count_tokens: Callable[[str], int] = len):
        if not problems:
            raise ValueError("the environment needs at least one problem")
        if config.uses_prm and scorer is None:
            raise ValueError(f"reward {config.reward!r} needs a PRM scorer")
        self.problems, self.config, self.scorer = list(problems), config, scorer
        self.prompt_for, self.count_tokens = prompt_for, count_tokens
        self.observation_space = gymnasium.spaces.Text(MAX_OBSERVATION_CHARS, charset=TEXT_CHARSET)
        self.action_space = gymnasium.spaces.Text(MAX_OBSERVATION_CHARS, charset=TEXT_CHARSET)
        self.episode: Episode | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """A new episode: `options={"problem": Problem}` or `{"index": i}` picks
        the problem, otherwise it is drawn with the environment's seeded RNG."""
        super().reset(seed=seed)
        options = options or {}
        if "problem" in options:
            problem = options["problem"]
        elif "index" in options:
            problem = self.problems[options["index"]]
        else:
            problem = self.problems[int(self.np_random.integers(len(self.problems)))]
        self.episode = Episode(problem, self.prompt_for(problem.question), self.config.step_separator)
        return self.episode.observation, {"problem_id": problem.id}

    def invalid_reason(self, action: Step) -> str | None:
        """Why `action` cannot be a step, or None; raises if the episode is over."""
        if self.episode is None or self.episode.done:
            raise ResetNeeded("step() after the episode ended: call reset() first")
        if not action.text.strip():
            return "empty"
        if action.finish_reason == "length" or action.num_tokens > self.config.max_step_tokens:
            return "too_long"
        return None

    def step(self, action: str | Step) -> tuple[str, float, bool, bool, dict]:
        step = as_step(action, self.count_tokens)
        invalid = self.invalid_reason(step)
        score = None
        if invalid is None and self.config.uses_prm:
            score = self.scorer.score_batch([(self.episode.problem.question, self.episode.steps + [step.text])])[0][-1]
        return self.apply(step, invalid, score)

    def apply(self, step: Step, invalid: str | None, prm_score: float | None) -> tuple[str, float, bool, bool, dict]:
        """Advance by a checked step whose PRM score (if the reward uses one) is known."""
        episode = self.episode
        episode.step_scores.append(prm_score)
        if invalid is not None:  # kept in the episode, so training sees the penalised tokens
            episode.actions.append(step)
            episode.invalid, episode.truncated = invalid, True
            episode.rewards.append(INVALID_ACTION_REWARD)
            return episode.observation, INVALID_ACTION_REWARD, False, True, self._info(prm_score)
        episode.actions.append(step)
        answer = final_answer(step.text)
        # A final answer ends the episode; so does the policy's own end of text.
        episode.terminated = answer is not None or step.finish_reason == "eos"
        episode.truncated = not episode.terminated and (
            len(episode.actions) >= self.config.max_steps
            or episode.solution_tokens >= self.config.max_episode_tokens)
        episode.correct = answer is not None and is_correct(step.text, episode.problem.answer, lenient=False)
        reward = 0.0
        if self.config.uses_prm:
            reward += prm_score
        if self.config.reward != "prm" and episode.done:
            reward += float(episode.correct)
        episode.rewards.append(reward)
        return episode.observation, reward, episode.terminated, episode.truncated, self._info(prm_score)

    def _info(self, prm_score: float | None) -> dict:
        episode = self.episode
        return {"correct": episode.correct, "answer": final_answer(episode.actions[-1].text) if episode.actions
                else None, "invalid": episode.invalid, "prm_score": prm_score, "steps": len(episode.actions)}


class VectorReasoningEnv:
    """Many `ReasoningEnv` episodes stepped together: one `step` call applies an
    action to every live episode and scores all new steps in one PRM call."""

    def __init__(self, envs: Sequence[ReasoningEnv]):
        self.envs = list(envs)

    @property
    def scorer(self) -> SyncScorer | None:
        return self.envs[0].scorer if self.envs else None

    def reset(self, problems: Sequence[Problem]) -> list[str]:
        """Episode i starts on problems[i] (repeat a problem for a GRPO group)."""
        if len(problems) != len(self.envs):
            raise ValueError(f"{len(problems)} problems for {len(self.envs)} environments")
        return [env.reset(options={"problem": p})[0] for env, p in zip(self.envs, problems)]

    @property
    def live(self) -> list[int]:
        return [i for i, env in enumerate(self.envs) if not env.episode.done]

    @property
    def episodes(self) -> list[Episode]:
        return [env.episode for env in self.envs]

    def step(self, actions: dict[int, str | Step]) -> dict[int, tuple[str, float, bool, bool, dict]]:
        """Apply `actions[i]` to episode i; returns each one's transition."""
        steps = {i: as_step(a, self.envs[i].count_tokens) for i, a in actions.items()}
        invalid = {i: self.envs[i].invalid_reason(s) for i, s in steps.items()}
        scores: dict[int, float] = {}
        scored = [i for i in steps if invalid[i] is None and self.envs[i].config.uses_prm]
        if scored:
            pairs = [(self.envs[i].episode.problem.question, self.envs[i].episode.steps + [steps[i].text])
                     for i in scored]
            scores = {i: values[-1] for i, values in zip(scored, self.scorer.score_batch(pairs))}
        return {i: self.envs[i].apply(steps[i], invalid[i], scores.get(i)) for i in steps}
