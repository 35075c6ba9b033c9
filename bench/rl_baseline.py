"""GRPO in `openr train rl` against TRL's GRPOTrainer, side by side.

Both sides start from the same SFT policy and train on the same questions, in
the same order, with the same outcome reward (each completion is played
through `ReasoningEnv`, so "correct" means exactly what it means in
`openr train rl`), the same number of samples per round (questions x group),
the same optimizer steps per round, learning rate, warmup, KL weight, clip and
sampling temperature. Each side is measured alone, one after the other, with
the same threads. Held-out accuracy is exact greedy grading
(`openr.training.policy_accuracy.model_grades`) every `--eval-every` rounds; the clock
stops while it runs, so both curves are training time only.

What differs is what each side is: TRL samples with `model.generate` and
normalises its loss its own way (its default `dapo`); ours samples through the
serving engine (`HFEngine`) and takes per-step GRPO advantages. TRL has no
process rewards, so the comparison is on the outcome reward.

Writes OUT/results.json, OUT/table.md and OUT/curves.png. TRL is an optional
extra (`pip install -e ".[dev]"` has it); it is never a serving dependency.

    python -m bench.rl_baseline --rounds 60 --out bench/results/rl_baseline

On a shared machine, run the sides at the same time so both meet the same
load, one thread each, then merge them into one report:

    OMP_NUM_THREADS=1 python -m bench.rl_baseline --sides ours --out runs/ours &
    OMP_NUM_THREADS=1 python -m bench.rl_baseline --sides trl --out runs/trl
    python -m bench.rl_baseline --merge runs/ours runs/trl --out bench/results/rl_baseline
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from openr.contracts import Step
from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, POLICY_SUBDIR
from openr.engine.hf_engine import HFEngine
from openr.hardware import machine_info
from openr.rl.commands import rl_train_problems
from openr.rl.config import RLConfig
from openr.rl.rollout import split_solution
from openr.rl.trainer import RLRun, draw_problems
from openr.tasks import arith
from openr.training.policy_accuracy import model_grades

DEFAULT_POLICY = BUILTIN_BUNDLES[ARITH_ALIAS] / POLICY_SUBDIR  # openr-arith's policy, inside the package


class Clock:
    """Training time only: paused while held-out accuracy is measured."""

    def __init__(self):
        self.spent, self.since = 0.0, None

    def start(self):
        self.since = time.perf_counter()

    def stop(self):
        self.spent += time.perf_counter() - self.since
        self.since = None

    @property
    def minutes(self) -> float:
        running = time.perf_counter() - self.since if self.since is not None else 0.0
        return (self.spent + running) / 60


async def training_curve(run: RLRun, label: str, rounds: int, eval_every: int, train_round) -> list[dict]:
    """Held-out accuracy of `run`'s policy before training and every
    `eval_every` rounds (and after the last), with the clock paused while it is
    measured. `await train_round(engine, iteration)` trains one round and
    returns (samples, optimizer steps); the engine samples from the weights
    being trained. Both RL benches train through this loop."""
    engine = run.engine()
    await engine.start()
    clock, curve, samples, steps = Clock(), [], 0, 0
    bar = tqdm(total=rounds, desc=label)

    async def record(iteration: int):
        accuracy, entropy, _ = await run.evaluate(engine)
        curve.append({"round": iteration, "steps": steps, "samples": samples, "minutes": clock.minutes,
                      "accuracy": accuracy, "probe_entropy": entropy})
        bar.set_postfix(acc=f"{curve[-1]['accuracy']:.3f}")

    try:
        await record(0)
        for iteration in range(rounds):
            clock.start()
            done = await train_round(engine, iteration)
            clock.stop()
            samples, steps = samples + done[0], steps + done[1]
            bar.update(1)
            if (iteration + 1) % eval_every == 0 or iteration + 1 == rounds:
                await record(iteration + 1)
    finally:
        bar.close()
        await engine.close()
    return curve


def run_ours(config: RLConfig, policy: Path, pool, held_out, rounds: int, eval_every: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        run = RLRun(config, policy, None, out, pool, held_out)

        async def train_round(engine: HFEngine, iteration: int) -> tuple[int, int]:
            episodes = await run.rollout(engine, iteration)
            run.update(episodes, iteration)
            return len(episodes), math.ceil(len(episodes) / config.minibatch_size) * config.update_epochs

        return asyncio.run(training_curve(run, "ours", rounds, eval_every, train_round))


def outcome_rewards(run: RLRun, problems_by_id: dict):
    """TRL's reward function: each completion played through a fresh
    `ReasoningEnv` episode, as `run_solutions` plays ours."""

    def reward(prompts, completions, problem_id, **_):
        envs = run.make_envs(len(completions))
        envs.reset([problems_by_id[i] for i in problem_id])
        for env, completion in zip(envs.envs, completions):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            for step in split_solution(Step(text, env.count_tokens(text), "eos", 0.0), env.count_tokens):
                if env.episode.done:
                    break
                env.step(step)
        return [float(e.correct) for e in envs.episodes]

    return reward


def run_trl(config: RLConfig, policy: Path, pool, held_out, rounds: int, eval_every: int) -> list[dict]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    with tempfile.TemporaryDirectory() as out:
        run = RLRun(config, policy, None, out, pool, held_out)  # the same model, tokenizer and environments
        problems = [p for iteration in range(rounds) for p in draw_problems(pool, config, iteration)]
        dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p.question}], "problem_id": p.id}
                                     for p in problems])
        steps_per_round = -(-config.questions_per_iteration * config.group_size // config.minibatch_size)
        args = GRPOConfig(
            output_dir=out, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
            save_strategy="no", logging_steps=steps_per_round, disable_tqdm=True, seed=config.seed,
            shuffle_dataset=False, max_steps=rounds * steps_per_round,
            per_device_train_batch_size=config.minibatch_size, steps_per_generation=steps_per_round,
            num_generations=config.group_size, max_completion_length=config.max_episode_tokens +
            config.max_step_tokens, temperature=config.temperature, learning_rate=config.learning_rate,
            lr_scheduler_type="constant_with_warmup", warmup_steps=config.warmup_iterations * steps_per_round,
            adam_beta2=0.99, weight_decay=0.0, max_grad_norm=config.max_grad_norm, beta=config.kl_coef,
            epsilon=config.clip, num_iterations=config.update_epochs)
        clock, curve = Clock(), []

        def record(iteration: int):
            curve.append({"round": iteration, "samples": iteration * config.questions_per_iteration *
                          config.group_size, "minutes": clock.minutes,
                          "accuracy": sum(model_grades(run.model, run.tokenizer, held_out, progress=False)) /
                          len(held_out)})
            print(f"trl round {iteration}: {curve[-1]}", flush=True)

        class Measure(TrainerCallback):
            def on_train_begin(self, *_, **__):
                record(0)
                clock.start()

            def on_step_end(self, _args, state, *_, **__):
                if state.global_step % steps_per_round:
                    return
                iteration = state.global_step // steps_per_round
                if iteration % eval_every == 0 or iteration == rounds:
                    clock.stop()
                    was_training = run.model.training
                    run.model.eval()
                    record(iteration)
                    run.model.train(was_training)
                    clock.start()

        trainer = GRPOTrainer(model=run.model, reward_funcs=outcome_rewards(run, {p.id: p for p in problems}),
                              args=args, train_dataset=dataset, processing_class=run.tokenizer,
                              callbacks=[Measure()])
        trainer.train()
    return curve


def write_report(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| side | round | samples | training minutes | held-out accuracy |", "| --- | --- | --- | --- | --- |"]
    for side, curve in results["curves"].items():
        lines += [f"| {side} | {p['round']} | {p['samples']} | {p['minutes']:.1f} | {100 * p['accuracy']:.1f}% |"
                  for p in curve]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    for axis, x, label in zip(figure.subplots(1, 2), ("minutes", "samples"),
                              ("training minutes (clock paused for evaluation)", "samples (completions)")):
        for side, curve in results["curves"].items():
            axis.plot([p[x] for p in curve], [100 * p["accuracy"] for p in curve], marker="o", label=side)
        axis.set_xlabel(label)
        axis.set_ylabel(f"held-out accuracy, greedy, {results['eval_problems']} problems (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"GRPO, outcome reward, from {Path(results['policy']).name}: ours vs TRL GRPOTrainer "
                    f"({results['machine']['cpu']}, torch threads: {results['machine']['torch_threads']})", fontsize=9)
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="SFT policy both sides start from")
    parser.add_argument("--rounds", type=int, default=60, help="rounds of questions x group samples per side")
    parser.add_argument("--questions", type=int, default=16, help="questions per round")
    parser.add_argument("--group", type=int, default=8, help="samples per question (GRPO's G)")
    parser.add_argument("--minibatch", type=int, default=32, help="completions per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=RLConfig.learning_rate)
    parser.add_argument("--kl", type=float, default=RLConfig.kl_coef, help="KL weight (TRL's beta)")
    parser.add_argument("--temperature", type=float, default=RLConfig.temperature)
    parser.add_argument("--eval-every", type=int, default=10, help="rounds between held-out evaluations")
    parser.add_argument("--eval-problems", type=int, default=200, help="held-out arith problems graded")
    parser.add_argument("--sides", nargs="+", choices=("ours", "trl"), default=["ours", "trl"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/rl_baseline"))
    parser.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                        help="write one report from the results.json of runs made one side each")
    args = parser.parse_args(argv)
    if args.merge:
        runs = [json.loads((d / "results.json").read_text()) for d in args.merge]
        merged = {**runs[0], "curves": {side: curve for r in runs for side, curve in r["curves"].items()},
                  "side_machines": {side: r["machine"] for r in runs for side in r["curves"]}}
        write_report(args.out, merged)
        print((args.out / "table.md").read_text())
        return
    config = RLConfig(algo="grpo", reward="outcome", questions_per_iteration=args.questions, group_size=args.group,
                      minibatch_size=args.minibatch, learning_rate=args.learning_rate, kl_coef=args.kl,
                      temperature=args.temperature, seed=args.seed)
    pool = rl_train_problems(config.train_problems)
    held_out = arith.test_split()[: args.eval_problems]
    sides = {"ours": run_ours, "trl": run_trl}
    curves = {}
    for side in args.sides:
        torch.manual_seed(args.seed)
        curves[side] = sides[side](config, args.policy, pool, held_out, args.rounds, args.eval_every)
    write_report(args.out, {"policy": str(args.policy), "rounds": args.rounds, "eval_problems": len(held_out),
                            "config": vars(args) | {"out": str(args.out), "policy": str(args.policy)},
                            "machine": machine_info(), "curves": curves})
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
