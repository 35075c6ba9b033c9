"""RLRun's ablation hooks on the shipped openr-arith policy (0.8M parameters, no
engine): a custom optimizer is used and warmed up group by group, an advantage
transform decides what the update trains, and `rollout` plays given questions."""

from __future__ import annotations

import asyncio

import pytest
import torch

from openr.contracts import Step
from openr.engine.checkpoints import split_bundle
from openr.rl.config import RLConfig
from openr.rl.rollout import run_solutions
from openr.rl.trainer import RLRun
from openr.tasks import arith

POLICY, _ = split_bundle("openr-arith")
POOL = arith.train_problems(8, seed=5, min_ops=2, max_ops=3)
HELD_OUT = arith.test_split()[:2]
CONFIG = RLConfig(questions_per_iteration=2, group_size=2, kl_coef=0.0, warmup_iterations=2, seed=3)


class GoldPolicy:
    """Answers every prefix with the gold solution of the problem it was built for."""

    def __init__(self, problem):
        self.problem = problem

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        return [[Step(self.problem.solution, 0, "eos", 0.0)] for _ in prefixes]


def gold_episodes(run: RLRun, count: int):
    """`count` episodes of one problem, each its gold solution: all correct."""
    envs = run.make_envs(count)
    envs.reset([POOL[0]] * count)
    return asyncio.run(run_solutions(envs, GoldPolicy(POOL[0]), 1.0))


def test_a_custom_optimizer_is_used_and_each_group_warms_up_from_its_own_rate(tmp_path):
    def make(model, config):
        parameters = list(model.parameters())
        return torch.optim.SGD([{"params": parameters[:1], "lr": 1.0}, {"params": parameters[1:], "lr": 0.5}])

    run = RLRun(CONFIG, POLICY, None, tmp_path, POOL, HELD_OUT, make_optimizer=make)
    assert isinstance(run.optimizer, torch.optim.SGD)
    metrics = run.update(gold_episodes(run, 4), iteration=0)
    assert [group["lr"] for group in run.optimizer.param_groups] == [0.5, 0.25]  # round 1 of 2 of warmup
    assert metrics["lr"] == CONFIG.learning_rate / 2


def test_a_custom_optimizer_is_refused_with_ppo(tmp_path):
    with pytest.raises(ValueError, match="value head"):
        RLRun(RLConfig(algo="ppo"), POLICY, None, tmp_path, POOL, HELD_OUT,
              make_optimizer=lambda model, config: torch.optim.SGD(model.parameters(), lr=0.1))


def test_the_advantage_transform_decides_what_the_update_trains(tmp_path):
    seen = []

    def nothing(episodes, advantages):
        seen.append((len(episodes), [len(a) for a in advantages]))
        return [[0.0] * len(a) for a in advantages]

    run = RLRun(CONFIG, POLICY, None, tmp_path / "zero", POOL, HELD_OUT, advantage_transform=nothing)
    before = [p.detach().clone() for p in run.model.parameters()]
    episodes = gold_episodes(run, 4)
    run.update(episodes, iteration=1)
    assert seen == [(4, [len(e.rewards) for e in episodes])]
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))  # zero advantage: no step

    ones = RLRun(CONFIG, POLICY, None, tmp_path / "one", POOL, HELD_OUT,
                 advantage_transform=lambda episodes, advantages: [[1.0] * len(a) for a in advantages])
    ones.update(gold_episodes(ones, 4), iteration=1)  # all-correct group: GRPO's own advantages are 0
    assert not all(torch.equal(a, b) for a, b in zip(before, ones.model.parameters()))


@pytest.mark.anyio
async def test_rollout_plays_the_questions_it_is_given(tmp_path):
    run = RLRun(CONFIG, POLICY, None, tmp_path, POOL, HELD_OUT)
    given = POOL[5]
    episodes = await run.rollout(GoldPolicy(given), 0, [given])
    assert len(episodes) == CONFIG.group_size
    assert all(e.problem == given and e.correct for e in episodes)


def test_the_muon_optimizer_is_the_policys_own_split_and_resumes(tmp_path):
    """`optimizer="muon"`: Muon on the hidden matrices, AdamW on embedding and
    norms (openr train sft's split), PPO's value head in its own AdamW; an
    expert-iteration update with it moves the policy, and a resumed run gets the
    same optimizer state back."""
    from openr.rl.checkpoint import save_state
    from openr.training.muon import Muon, OptimizerGroup

    config = RLConfig(algo="expert-iteration", optimizer="muon", questions_per_iteration=2, group_size=2,
                      warmup_iterations=1, seed=3)
    run = RLRun(config, POLICY, None, tmp_path, POOL, HELD_OUT)
    muon, adamw = run.optimizer.optimizers
    assert isinstance(run.optimizer, OptimizerGroup) and isinstance(muon, Muon)
    embedding = run.model.get_input_embeddings().weight
    assert all(p.dim() == 2 and p is not embedding for g in muon.param_groups for p in g["params"])
    assert any(p is embedding for g in adamw.param_groups for p in g["params"])
    before = [p.detach().clone() for p in run.model.parameters()]
    assert run.update(gold_episodes(run, 2), iteration=0)["accepted"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    save_state(tmp_path, run)
    resumed = RLRun(config, POLICY, None, tmp_path, POOL, HELD_OUT)
    saved, loaded = run.optimizer.state_dict()["optimizers"], resumed.optimizer.state_dict()["optimizers"]
    assert [len(s["state"]) for s in loaded] == [len(s["state"]) for s in saved] and loaded[0]["state"]
    assert torch.equal(loaded[0]["state"][0]["momentum_buffer"], saved[0]["state"][0]["momentum_buffer"])
    ppo = RLRun(RLConfig(algo="ppo", optimizer="muon"), POLICY, None, tmp_path / "ppo", POOL, HELD_OUT)
    assert len(ppo.optimizer.optimizers) == 3
    assert ppo.optimizer.param_groups[-1]["lr"] == RLConfig().value_learning_rate
