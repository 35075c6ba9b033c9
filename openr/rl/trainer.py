"""Online RL on reasoning steps: rollouts through the serving engine, rewards
from the PRM and/or exact grading, PPO or GRPO updates.

Each round draws questions (seeded by round, so a resumed run draws the same
ones), plays `group_size` episodes of each in `VectorReasoningEnv` with the
in-process HF engine sampling from the weights being trained, computes
per-step advantages (`openr.rl.advantages`: GAE with a value head for PPO,
group normalisation for GRPO), and takes clipped policy-gradient steps on the
action tokens with a KL penalty to the starting policy. Held-out accuracy is
exact greedy grading, never the PRM, and a round where the PRM reward rose
while accuracy fell is reported as possible reward hacking.

How this departs from the papers: the KL penalty is in the loss (k3, as GRPO),
for PPO too, rather than folded into the rewards; PPO's value head shares the
policy's trunk; advantages are per step, so every token of a step shares one.
"""

from __future__ import annotations

import asyncio
import copy
import random
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from openr.engine.hf_engine import HFEngine
from openr.hardware import TimeCap, choose_dtype, machine_info
from openr.rl.advantages import gae, group_outcome_advantages, group_process_advantages, normalise
from openr.rl.checkpoint import RunState, load_latest, save_final, save_state
from openr.rl.config import RLConfig
from openr.rl.env import EnvConfig, Episode, ReasoningEnv, VectorReasoningEnv
from openr.rl.losses import (
    ValueHead,
    clipped_policy_loss,
    clipped_value_loss,
    kl_to_reference,
    masked_mean,
    token_advantages,
    token_view,
)
from openr.rl.rollout import encode_episodes, run_episodes, run_solutions, select_rows
from openr.tasks.problem import Problem
from openr.training.policy_accuracy import engine_grades

ROUND_SEED_STRIDE = 1_000_003  # per-round seeds: seed * stride + round
SEED_SPACE = 2**31  # round seeds stay here, so every seed derived from them fits torch's 64 bits

# The two hooks of RLRun for ablations (bench/rl_ablations.py); `openr train rl` sets neither.
OptimizerFactory = Callable[[torch.nn.Module, RLConfig], torch.optim.Optimizer]
AdvantageTransform = Callable[[list[Episode], list[list[float]]], list[list[float]]]


def round_seed(config: RLConfig, iteration: int) -> int:
    """The seed of one round's questions, sampling and minibatch order."""
    return (config.seed * ROUND_SEED_STRIDE + iteration) % SEED_SPACE


def draw_problems(pool: Sequence[Problem], config: RLConfig, iteration: int) -> list[Problem]:
    """The round's questions: a function of the seed and the round alone."""
    rng = random.Random(round_seed(config, iteration))
    return rng.sample(pool, min(config.questions_per_iteration, len(pool)))


def step_advantages(config: RLConfig, episodes: list[Episode],
                    old_values: list[torch.Tensor] | None) -> tuple[list[list[float]], list[list[float]]]:
    """Per-step advantages, and (PPO) the returns the value head regresses to."""
    if config.algo == "ppo":
        advantages, returns = [], []
        for episode, values in zip(episodes, old_values):
            values = values.tolist()
            steps = len(episode.rewards)
            bootstrap = episode.truncated and episode.invalid is None  # cut by a cap, not ended
            a, r = gae(episode.rewards, values[:steps], values[steps] if bootstrap else 0.0, config.gamma,
                       config.lam)
            advantages.append(a)
            returns.append(r)
        flat = [a for steps in advantages for a in steps]
        mean, std = statistics.fmean(flat), statistics.pstdev(flat)
        return [normalise(steps, mean, std) for steps in advantages], returns
    advantages = []
    for start in range(0, len(episodes), config.group_size):
        group = episodes[start : start + config.group_size]
        if config.reward == "outcome":
            totals = group_outcome_advantages([sum(e.rewards) for e in group])
            advantages += [[total] * len(e.rewards) for total, e in zip(totals, group)]
        else:
            advantages += group_process_advantages([e.rewards for e in group])
    return advantages, []


class RLRun:
    """One training run: the policy, its reference and value head, the optimizer,
    and the state a resume needs.

    Two optional hooks let an ablation swap one piece and keep the rest of the
    loop: `make_optimizer(model, config)` replaces the AdamW over the policy
    (anything with torch's `param_groups`, `zero_grad` and `step`; warmup
    scales each group's own starting learning rate), and
    `advantage_transform(episodes, advantages)` rewrites the per-step
    advantages before the update (e.g. keeps only the positive ones). Neither
    is in the saved config, so a resume must pass the same ones; PPO keeps the
    default optimizer, which also holds its value head."""

    def __init__(self, config: RLConfig, policy_dir: str | Path, prm_dir: str | Path | None, out_dir: str | Path,
                 train_pool: Sequence[Problem], eval_set: Sequence[Problem],
                 make_optimizer: OptimizerFactory | None = None,
                 advantage_transform: AdvantageTransform | None = None):
        if make_optimizer is not None and config.algo == "ppo":
            raise ValueError("a custom optimizer covers the policy only: PPO's value head needs the default one")
        self.config, self.out = config, Path(out_dir)
        self.advantage_transform = advantage_transform
        self.train_pool, self.eval_set = list(train_pool), list(eval_set)
        if not self.train_pool or not self.eval_set:
            raise ValueError("RL needs at least one training and one held-out problem")
        self.dtype = choose_dtype(config.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(policy_dir)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            self.tokenizer.eos_token_id
        self.model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False) if config.kl_coef else None
        self.value_head = ValueHead(self.model.config.hidden_size) if config.algo == "ppo" else None
        if make_optimizer is not None:
            self.optimizer = make_optimizer(self.model, config)
        else:
            groups = [{"params": list(self.model.parameters()), "lr": config.learning_rate}]
            if self.value_head is not None:
                groups.append({"params": list(self.value_head.parameters()), "lr": config.value_learning_rate})
            self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=0.0)
        # read before a resume loads the optimizer's state, whose rates are the warmed-up ones
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.state = RunState()
        self.scorer = None
        if EnvConfig(reward=config.reward).uses_prm:
            from openr.prm import load_prm

            if prm_dir is None:
                raise ValueError(f"reward {config.reward!r} needs --prm")
            self.scorer = load_prm(prm_dir)
        load_latest(self.out, self)

    def make_envs(self, count: int) -> VectorReasoningEnv:
        config = self.config
        env_config = EnvConfig(reward=config.reward, max_steps=config.max_steps,
                               max_step_tokens=config.max_step_tokens, max_episode_tokens=config.max_episode_tokens)

        def prompt_for(question: str) -> str:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                      add_generation_prompt=True, tokenize=False)

        def count_tokens(text: str) -> int:
            return len(self.tokenizer.encode(text, add_special_tokens=False))

        return VectorReasoningEnv([ReasoningEnv(self.train_pool, env_config, self.scorer, prompt_for, count_tokens)
                                   for _ in range(count)])

    async def rollout(self, engine: HFEngine, iteration: int,
                      problems: Sequence[Problem] | None = None) -> list[Episode]:
        """`group_size` episodes of each of the round's questions: `problems` when
        given (an ablation choosing its own), else the round's seeded draw."""
        if problems is None:
            problems = draw_problems(self.train_pool, self.config, iteration)
        envs = self.make_envs(len(problems) * self.config.group_size)
        envs.reset([p for p in problems for _ in range(self.config.group_size)])
        self.model.eval()
        play = run_solutions if self.config.rollout == "solution" else run_episodes
        return await play(envs, engine, self.config.temperature, seed=round_seed(self.config, iteration))

    def update(self, episodes: list[Episode], iteration: int) -> dict:
        """Advantages, then `update_epochs` passes of clipped policy-gradient steps.
        Minibatches hold episodes of similar length (little padding: episodes
        here run from ~100 to ~550 tokens), in a seeded random order."""
        config = self.config
        batch = encode_episodes(episodes, self.tokenizer, self.pad_id)
        lengths = batch.attention_mask.sum(1).tolist()
        by_length = sorted(range(len(episodes)), key=lambda i: (lengths[i], i))
        chunks = [torch.tensor(by_length[s : s + config.minibatch_size])
                  for s in range(0, len(by_length), config.minibatch_size)]
        old, reference, values = [], [], [None] * len(episodes)
        with torch.no_grad(), self._autocast():
            for rows in chunks:
                sub = select_rows(batch, rows)
                old.append(token_view(self.model, sub, self.value_head, config.temperature))
                reference.append(token_view(self.reference, sub, temperature=config.temperature)
                                 if self.reference is not None else None)
                for row, value in zip(rows.tolist(), old[-1].values or []):
                    values[row] = value
        advantages, returns = step_advantages(config, episodes, values)
        if self.advantage_transform is not None:
            advantages = self.advantage_transform(episodes, advantages)
        generator = torch.Generator().manual_seed(round_seed(config, iteration))
        self.model.train()
        warmup = min(1.0, (iteration + 1) / max(config.warmup_iterations, 1))
        lr = config.learning_rate * warmup
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * warmup
        logs: dict[str, list[float]] = {}
        for _ in range(config.update_epochs):
            for k in torch.randperm(len(chunks), generator=generator).tolist():
                step = self._minibatch_step(select_rows(batch, chunks[k]), chunks[k].tolist(), old[k],
                                            reference[k], advantages, returns)
                for name, value in step.items():
                    logs.setdefault(name, []).append(value)
        metrics = {name: statistics.fmean(values) for name, values in logs.items()}
        if config.algo == "ppo":
            predicted = torch.cat([v[: len(e.rewards)] for v, e in zip(values, episodes)])
            targets = torch.tensor([r for steps in returns for r in steps])
            variance = targets.var().item()
            metrics["explained_variance"] = 1 - (targets - predicted).var().item() / variance if variance else 0.0
        metrics["lr"] = lr
        return metrics

    def _minibatch_step(self, sub, rows: list[int], old, reference, advantages, returns) -> dict:
        config = self.config
        with self._autocast():
            view = token_view(self.model, sub, self.value_head, config.temperature)
        mask = view.mask
        token_adv = token_advantages([advantages[r] for r in rows], view.step_index)
        policy_loss, stats = clipped_policy_loss(view.logprobs, old.logprobs, token_adv, mask, config.clip)
        entropy = masked_mean(view.entropy, mask)
        loss = policy_loss - config.entropy_coef * entropy
        logs = {"policy_loss": policy_loss.item(), "entropy": entropy.item(), **stats}
        if reference is not None:
            kl = kl_to_reference(view.logprobs, reference.logprobs, mask)
            loss = loss + config.kl_coef * kl
            logs["kl"] = kl.item()
        if self.value_head is not None:
            steps = [len(returns[r]) for r in rows]
            predicted = torch.cat([v[:n] for v, n in zip(view.values, steps)])
            previous = torch.cat([v[:n] for v, n in zip(old.values, steps)])
            target = torch.tensor([x for r in rows for x in returns[r]])
            value_loss = clipped_value_loss(predicted.float(), previous, target, config.value_clip)
            loss = loss + config.value_coef * value_loss
            logs["value_loss"] = value_loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        self.optimizer.step()
        return logs

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype.autocast)

    async def evaluate(self, engine: HFEngine) -> float:
        """Held-out greedy accuracy, through the engine that samples the rollouts."""
        self.model.eval()
        grades = await engine_grades(engine, self.eval_set, progress=False)
        return sum(grades) / len(grades)

    def rollout_metrics(self, episodes: list[Episode]) -> dict:
        metrics = {"reward": statistics.fmean(sum(e.rewards) for e in episodes),
                   "train_accuracy": statistics.fmean(float(e.correct) for e in episodes),
                   "invalid": statistics.fmean(float(e.invalid is not None) for e in episodes),
                   "steps": statistics.fmean(len(e.actions) for e in episodes),
                   "sampled_tokens": sum(e.solution_tokens for e in episodes)}
        if self.config.reward != "outcome":
            correct_part = [float(e.correct) if self.config.reward == "prm+outcome" else 0.0 for e in episodes]
            metrics["prm_reward"] = statistics.fmean(sum(e.rewards) - c for e, c in zip(episodes, correct_part))
        return metrics


async def _train(run: RLRun, progress: bool) -> dict:
    config, state = run.config, run.state
    engine = HFEngine.for_model(run.model, run.tokenizer,
                                decode_batch_size=config.questions_per_iteration * config.group_size)
    await engine.start()
    cap = TimeCap(config.max_minutes, "RL training")
    bar = tqdm(total=config.iterations, initial=state.iteration, desc=f"rl {config.algo}", disable=not progress)
    try:
        if state.iteration == 0 and not state.evals:
            state.record_eval(0, await run.evaluate(engine))
        while state.iteration < config.iterations and not cap.reached(state.iteration, config.iterations):
            iteration, started = state.iteration, time.monotonic()
            episodes = await run.rollout(engine, iteration)
            metrics = {"iteration": iteration + 1, **run.rollout_metrics(episodes), **run.update(episodes, iteration)}
            state.iteration += 1
            state.samples += len(episodes)
            metrics["samples"] = state.samples
            state.history.append(metrics)
            if state.iteration % config.eval_every == 0 or state.iteration == config.iterations:
                warning = state.record_eval(state.iteration, await run.evaluate(engine))
                if warning:
                    tqdm.write(f"WARNING: {warning}")
                metrics["held_out_accuracy"] = state.evals[-1]["accuracy"]
            state.minutes += (time.monotonic() - started) / 60
            metrics["minutes"] = state.minutes
            if state.iteration % config.save_every == 0 or state.iteration == config.iterations:
                save_state(run.out, run)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", acc=f"{state.evals[-1]['accuracy']:.3f}",
                            kl=f"{metrics.get('kl', 0.0):.4f}", ent=f"{metrics['entropy']:.3f}")
    finally:
        bar.close()
        await engine.close()
    return {**cap.summary(state.iteration, config.iterations), "minutes": state.minutes}


def train_rl(config: RLConfig, policy_dir: str | Path, prm_dir: str | Path | None, out_dir: str | Path,
             train_pool: Sequence[Problem], eval_set: Sequence[Problem], progress: bool = True) -> dict:
    """Run (or resume) RL and write the trained policy as a servable HF
    checkpoint in `out_dir`; returns the summary also written to summary.json."""
    torch.manual_seed(config.seed)
    run = RLRun(config, policy_dir, prm_dir, out_dir, train_pool, eval_set)
    cap_summary = asyncio.run(_train(run, progress))
    summary = {"algo": config.algo, "reward": config.reward, "policy_from": str(policy_dir),
               **cap_summary, "samples": run.state.samples, "evals": run.state.evals,
               "reward_hacking": run.state.warnings, **run.dtype.summary(), "machine": machine_info()}
    save_final(run.out, run, summary)
    return summary
