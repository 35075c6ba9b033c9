"""Advantages over reasoning steps: the one place PPO and GRPO differ.

PPO estimates each step's advantage with a value network and generalised
advantage estimation (GAE, Schulman et al. 2016). GRPO (DeepSeekMath, Shao et
al. 2024) has no critic: a sample's reward is compared with the other samples
of its question. Both return one advantage per step; every token of a step
gets its step's advantage. Plain lists and loops, as in the papers.
"""

from __future__ import annotations

import statistics
from typing import Sequence

STD_EPS = 1e-6  # guards the division for a group whose rewards are all equal


def gae(rewards: Sequence[float], values: Sequence[float], next_value: float, gamma: float,
        lam: float) -> tuple[list[float], list[float]]:
    """Advantages and returns of one episode. `values[t]` is V(s_t) before
    step t; `next_value` is V of the state after the last step (0 when the
    episode terminated, the critic's estimate when it was truncated)."""
    advantages = [0.0] * len(rewards)
    last = 0.0
    for t in reversed(range(len(rewards))):
        following = values[t + 1] if t + 1 < len(rewards) else next_value
        delta = rewards[t] + gamma * following - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    returns = [a + v for a, v in zip(advantages, values)]
    return advantages, returns


def normalise(values: Sequence[float], mean: float, std: float) -> list[float]:
    """(v - mean) / std, safe for std 0 (PPO's batch and GRPO's groups alike)."""
    return [(v - mean) / (std + STD_EPS) for v in values]


def group_outcome_advantages(returns: Sequence[float]) -> list[float]:
    """Outcome supervision: each sample's total reward, normalised against
    its group (mean and population std over the G samples of one question)."""
    return normalise(returns, statistics.fmean(returns), statistics.pstdev(returns))


def group_process_advantages(step_rewards: Sequence[Sequence[float]]) -> list[list[float]]:
    """Process supervision: every step reward of the group is normalised by the
    mean and std of all step rewards in the group, and a step's advantage is the
    sum of the normalised rewards from it to the end (reward-to-go)."""
    flat = [r for rewards in step_rewards for r in rewards]
    if not flat:
        return [[] for _ in step_rewards]
    mean, std = statistics.fmean(flat), statistics.pstdev(flat)
    advantages = []
    for rewards in step_rewards:
        normalised = normalise(rewards, mean, std)
        to_go, total = [0.0] * len(normalised), 0.0
        for t in reversed(range(len(normalised))):
            total += normalised[t]
            to_go[t] = total
        advantages.append(to_go)
    return advantages
