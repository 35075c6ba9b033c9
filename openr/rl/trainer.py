"""Online RL on reasoning steps: rollouts through the serving engine, rewards
from the PRM and/or exact grading, PPO, GRPO or expert-iteration updates
(`openr.rl.update`), with diagnostics every round (`openr.rl.diagnostics`).

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
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from openr.engine.hf_engine import HFEngine
from openr.hardware import DtypeChoice, TimeCap, choose_dtype, machine_info
from openr.rl.checkpoint import RunState, is_best, load_latest, save_best, save_final, save_state, write_history
from openr.rl.config import MAX_DRAWS_PER_ROUND, RLConfig
from openr.rl.diagnostics import probe_entropy, probe_episodes
from openr.rl.env import EnvConfig, Episode, ReasoningEnv, VectorReasoningEnv
from openr.rl.losses import ValueHead
from openr.rl.rollout import run_episodes, run_solutions
from openr.rl.update import expert_iteration_update, policy_update
from openr.tasks.problem import Problem
from openr.training.muon import OptimizerGroup, clear_state
from openr.training.policy_accuracy import engine_grades
from openr.training.sft import SFTConfig, lr_factor, make_optimizers

ROUND_SEED_STRIDE = 1_000_003  # per-round seeds: seed * stride + round
# Rollouts decoded at once, a bound on the padded KV cache. On openr-arith 512 x 8 at once peaked at 12 GB
# resident, and so did a round of 8,192 x 2 at 2,048 a time: the rest of a round's memory is elsewhere (not
# measured yet).
MAX_DECODE_BATCH = 2048
ROUND_MIN_LR_RATIO = 0.1  # --round-schedule cosine ends each round at this share of the peak, as SFT's default
SEED_SPACE = 2**31  # round seeds stay here, so every seed derived from them fits torch's 64 bits

# The two hooks of RLRun for ablations (bench/rl_ablations.py); `openr train rl` sets neither.
OptimizerFactory = Callable[[torch.nn.Module, RLConfig], torch.optim.Optimizer]
AdvantageTransform = Callable[[list[Episode], list[list[float]]], list[list[float]]]


def round_seed(config: RLConfig, iteration: int) -> int:
    """The seed of one round's questions, sampling and minibatch order."""
    return (config.seed * ROUND_SEED_STRIDE + iteration) % SEED_SPACE


def sampling_seed(config: RLConfig, iteration: int, draw: int) -> int:
    """The engine seed of a round's `draw`-th rollout (dynamic sampling draws again)."""
    return round_seed(config, iteration) * MAX_DRAWS_PER_ROUND + draw


def draw_problems(pool: Sequence[Problem], config: RLConfig, iteration: int, draw: int = 0,
                  skip: Collection[str] = frozenset()) -> list[Problem]:
    """The round's questions: a function of the seed, the round and the draw
    alone, never one whose id is in `skip`."""
    rng = random.Random(round_seed(config, iteration) if draw == 0 else f"{round_seed(config, iteration)}/{draw}")
    eligible = [p for p in pool if p.id not in skip] if skip else list(pool)
    return rng.sample(eligible, min(config.questions_per_iteration, len(eligible)))


def accuracy_by_level(problems: Sequence[Problem], grades: Sequence[bool]) -> dict[str, float] | None:
    """The share right at each level (None when a problem has no level)."""
    if any(p.level is None for p in problems):
        return None
    by_level: dict[str, list[bool]] = {}
    for problem, grade in sorted(zip(problems, grades), key=lambda pair: pair[0].level):
        by_level.setdefault(str(problem.level), []).append(grade)
    return {level: sum(right) / len(right) for level, right in by_level.items()}


def default_optimizer(model: torch.nn.Module, value_head: ValueHead | None, config: RLConfig,
                      dtype: DtypeChoice):
    """AdamW over the policy, or (`optimizer` muon) the split the policy was
    trained with (`openr.training.sft.make_optimizers`); PPO's value head gets
    its own AdamW group at `value_learning_rate` either way."""
    value_groups = [] if value_head is None else [{"params": list(value_head.parameters()),
                                                   "lr": config.value_learning_rate}]
    if config.optimizer == "adamw":
        groups = [{"params": list(model.parameters()), "lr": config.learning_rate}, *value_groups]
        return torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=0.0)
    optimizers = make_optimizers(model, SFTConfig(learning_rate=config.learning_rate), dtype)
    if value_groups:
        optimizers.append(torch.optim.AdamW(value_groups, betas=(0.9, 0.99), weight_decay=0.0))
    return OptimizerGroup(*optimizers)


def has_signal(group: Sequence[Episode]) -> bool:
    """Whether a question's samples earned different rewards (else GRPO's advantages are all 0)."""
    return len({round(sum(e.rewards), 9) for e in group}) > 1


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
        uses_reference = config.kl_coef and config.algo != "expert-iteration"  # its loss has no KL term
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False) if uses_reference else None
        self.value_head = ValueHead(self.model.config.hidden_size) if config.algo == "ppo" else None
        if make_optimizer is not None:
            self.optimizer = make_optimizer(self.model, config)
        else:
            self.optimizer = default_optimizer(self.model, self.value_head, config, self.dtype)
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

    def engine(self) -> HFEngine:
        """The engine that samples the rollouts from the model being trained: a
        round's samples decode together, up to MAX_DECODE_BATCH at a time (a
        larger round queues the rest, which bounds the padded KV cache)."""
        return HFEngine.for_model(self.model, self.tokenizer, decode_batch_size=min(
            self.config.questions_per_iteration * self.config.group_size, MAX_DECODE_BATCH))

    def prompt_for(self, question: str) -> str:
        return self.tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                  add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def make_envs(self, count: int) -> VectorReasoningEnv:
        config = self.config
        env_config = EnvConfig(reward=config.reward, max_steps=config.max_steps,
                               max_step_tokens=config.max_step_tokens, max_episode_tokens=config.max_episode_tokens,
                               step_separator=config.step_separator)
        return VectorReasoningEnv([ReasoningEnv(self.train_pool, env_config, self.scorer, self.prompt_for,
                                                self.count_tokens) for _ in range(count)])

    async def rollout(self, engine: HFEngine, iteration: int,
                      problems: Sequence[Problem] | None = None) -> list[Episode]:
        """`group_size` episodes of each of the round's questions: `problems` when
        given (an ablation choosing its own), else the round's seeded draw. With
        dynamic sampling, groups whose rewards are all equal are dropped and more
        questions drawn until the round is full; with edge_of_competence, questions
        whose earlier samples were all right or all wrong are not drawn. Every
        sampled episode counts in `state.samples`, kept or not."""
        config = self.config
        if problems is not None:
            return await self.play(engine, problems, sampling_seed(config, iteration, 0))
        kept: list[list[Episode]] = []
        for draw in range(MAX_DRAWS_PER_ROUND if config.dynamic_sampling else 1):
            skip = self.state.settled_questions() if config.edge_of_competence else frozenset()
            problems = draw_problems(self.train_pool, config, iteration, draw, skip)
            if not problems:
                break
            episodes = await self.play(engine, problems, sampling_seed(config, iteration, draw))
            groups = [episodes[s : s + config.group_size] for s in range(0, len(episodes), config.group_size)]
            kept += [group for group in groups if not config.dynamic_sampling or has_signal(group)]
            if len(kept) >= config.questions_per_iteration:
                break
        return [episode for group in kept[: config.questions_per_iteration] for episode in group]

    async def play(self, engine: HFEngine, problems: Sequence[Problem], seed: int) -> list[Episode]:
        """`group_size` episodes of each problem, counted and remembered by question."""
        envs = self.make_envs(len(problems) * self.config.group_size)
        envs.reset([p for p in problems for _ in range(self.config.group_size)])
        self.model.eval()
        play = run_solutions if self.config.rollout == "solution" else run_episodes
        episodes = await play(envs, engine, self.config.temperature, seed=seed)
        self.state.samples += len(episodes)
        self.state.record_passes(episodes)
        return episodes

    def update(self, episodes: list[Episode], iteration: int) -> dict:
        """The round's update (`openr.rl.update`), minibatches in a seeded random order."""
        generator = torch.Generator().manual_seed(round_seed(self.config, iteration))
        self.model.train()
        if self.config.round_schedule == "cosine":  # a fine-tune of its own: `round_lr` sets each step's rate
            warmup = 1.0
            clear_state(self.optimizer)
        else:
            warmup = min(1.0, (iteration + 1) / max(self.config.warmup_iterations, 1))
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * warmup
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.algo == "expert-iteration":
            metrics = expert_iteration_update(self, episodes, generator)
        else:
            metrics = policy_update(self, episodes, iteration, generator)
        return metrics | {"lr": self.config.learning_rate * warmup}

    def round_lr(self, step: int, steps: int) -> None:
        """--round-schedule cosine: set the rates of the round's `step`-th of
        `steps` optimizer steps, as `openr train sft`'s schedule over a run of
        `steps` (warmup capped at the round's length); constant: leave them."""
        if self.config.round_schedule != "cosine":
            return
        schedule = SFTConfig(max_steps=steps, warmup_steps=min(self.config.round_warmup_steps, steps),
                             min_lr_ratio=ROUND_MIN_LR_RATIO)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * lr_factor(schedule, step)

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype.autocast)

    async def evaluate(self, engine: HFEngine) -> tuple[float, float | None, dict[str, float] | None]:
        """Held-out greedy accuracy, through the engine that samples the rollouts,
        the policy's entropy on the held-out gold solutions (the fixed probe), and
        the accuracy per level where the problems have levels."""
        self.model.eval()
        grades = await engine_grades(engine, self.eval_set, progress=False, max_tokens=self.config.eval_max_tokens)
        probe = probe_episodes(self.eval_set, self.prompt_for, self.count_tokens)
        entropy = probe_entropy(self.model, self.tokenizer, self.pad_id, probe, self.config.temperature)
        return sum(grades) / len(grades), entropy, accuracy_by_level(self.eval_set, grades)

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
    engine = run.engine()
    await engine.start()
    cap = TimeCap(config.max_minutes, "RL training")
    bar = tqdm(total=config.iterations, initial=state.iteration, desc=f"rl {config.algo}", disable=not progress)
    try:
        if state.iteration == 0 and not state.evals:
            state.record_eval(0, *await run.evaluate(engine))
            save_best(run.out, run)
        while state.iteration < config.iterations and not cap.reached(state.iteration, config.iterations):
            iteration, started = state.iteration, time.monotonic()
            episodes = await run.rollout(engine, iteration)
            if not episodes:  # dynamic sampling found no question with signal: no update
                metrics = {"iteration": iteration + 1, "groups": 0}
            else:
                metrics = {"iteration": iteration + 1, "groups": len(episodes) // config.group_size,
                           **run.rollout_metrics(episodes), **run.update(episodes, iteration)}
            state.iteration += 1
            metrics["samples"] = state.samples
            state.history.append(metrics)
            if state.iteration % config.eval_every == 0 or state.iteration == config.iterations:
                warning = state.record_eval(state.iteration, *await run.evaluate(engine))
                if warning:
                    tqdm.write(f"WARNING: {warning}")
                metrics["held_out_accuracy"] = state.evals[-1]["accuracy"]
                metrics["probe_entropy"] = state.evals[-1]["probe_entropy"]
                if state.evals[-1]["by_level"] is not None:
                    metrics["held_out_by_level"] = state.evals[-1]["by_level"]
                if is_best(state):
                    save_best(run.out, run)
            state.minutes += (time.monotonic() - started) / 60
            metrics["minutes"] = state.minutes
            if state.iteration % config.save_every == 0 or state.iteration == config.iterations:
                save_state(run.out, run)
            bar.update(1)
            write_history(run.out, state)
            bar.set_postfix(reward=f"{metrics.get('reward', 0.0):.3f}", acc=f"{state.evals[-1]['accuracy']:.3f}",
                            signal=f"{metrics.get('gradient_signal', 0.0):.3f}",
                            zero_adv=f"{metrics.get('zero_advantage_share', 0.0):.2f}",
                            kl=f"{metrics.get('kl', 0.0):.4f}", ent=f"{metrics.get('entropy', 0.0):.3f}")
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
