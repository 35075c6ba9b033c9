"""`openr train rl`: the command line of `openr.rl.trainer` (every RLConfig field is a kebab-case flag)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from openr.cli_flags import add_config_flags, step_separator
from openr.engine.checkpoints import ARITH_ALIAS, SMOLLM2_ALIAS, materialize, split_bundle
from openr.hardware import DTYPES
from openr.rl.config import ALGORITHMS, OPTIMIZERS, ROLLOUTS, RLConfig
from openr.rl.env import REWARDS
from openr.tasks import arith

ARITH_TEST, ARITH_VALIDATION = "arith", "arith-val"  # as `openr eval --dataset` names them
# SFT draws arith problems with seed 0, labelling with 1, the validation split is seed 2; RL has its own stream,
# from which the validation split's problems are dropped too, since RL runs are chosen on it
RL_PROBLEM_SEED = 3


def rl_train_problems(n: int, min_ops: int = arith.MIN_LEVEL, max_ops: int = arith.MAX_LEVEL) -> list:
    """RL's arith training problems: none in the test or the validation split."""
    return arith.train_problems(n, seed=RL_PROBLEM_SEED, min_ops=min_ops, max_ops=max_ops, without_validation=True)
COMMAND_FILE = "command.txt"
CHOICES = {"algo": ALGORITHMS, "reward": REWARDS, "dtype": DTYPES, "rollout": ROLLOUTS,
           "optimizer": OPTIMIZERS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openr train rl", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Online RL of a policy checkpoint over reasoning steps (OpenR's MDP: a step is an action), "
                    "with PPO (value head + GAE) or GRPO (group-normalised advantages), rewarded by a PRM's step "
                    "scores, exact grading of the final answer, or both. Rollouts run through the serving "
                    "engine; held-out accuracy is exact greedy grading. Writes a servable HF checkpoint to OUT "
                    "(`openr serve --model OUT`), OUT/history.jsonl, OUT/summary.json; rerun the same command "
                    "to resume after a kill.")
    parser.add_argument("--policy", required=True,
                        help="policy to start from: a HF checkpoint directory, a bundle (its policy/), or a name "
                             f"`openr serve --model` takes ({ARITH_ALIAS}, {SMOLLM2_ALIAS}, a hub id)")
    parser.add_argument("--prm", help="PRM checkpoint directory (needed for --reward prm and prm+outcome)")
    parser.add_argument("--out", required=True, help="output directory (checkpoint, history, resumable state)")
    parser.add_argument("--dataset", help="training problems as jsonl (GSM8K/MATH formats); default: the "
                                          "synthetic arith train split")
    parser.add_argument("--eval-dataset", default=ARITH_TEST,
                        help=f"held-out problems: `{ARITH_VALIDATION}` (arith problems no training stage used: choose "
                             f"runs, checkpoints and settings on it), `{ARITH_TEST}` (the arith test split: report it "
                             "once, for the chosen run) or a jsonl file (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_flags(parser, RLConfig, choices=CHOICES, parsers={"step_separator": step_separator})
    return parser


def problem_sets(args: argparse.Namespace, config: RLConfig) -> tuple[list, list]:
    from openr.tasks.datasets import load_problems

    pool = load_problems(args.dataset) if args.dataset else rl_train_problems(config.train_problems)
    splits = {ARITH_TEST: arith.test_split, ARITH_VALIDATION: arith.validation_split}
    held_out = splits[args.eval_dataset]() if args.eval_dataset in splits else load_problems(args.eval_dataset)
    return pool, held_out[: config.eval_problems]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(RLConfig)}
    try:
        config = RLConfig(**{k: v for k, v in vars(args).items() if k in fields})
    except ValueError as error:
        build_parser().error(str(error))
    from openr.rl.trainer import train_rl

    try:
        pool, held_out = problem_sets(args, config)
        if not pool or not held_out:
            raise ValueError("the training and held-out sets each need at least one problem")
        policy = materialize(split_bundle(args.policy)[0])  # as `openr serve --model` reads it
    except (OSError, ValueError) as error:
        build_parser().error(str(error))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # the command that wrote the run, beside what it wrote
    (out / COMMAND_FILE).write_text(shlex.join(["openr", "train", "rl", *(sys.argv[1:] if argv is None else argv)])
                                    + "\n")
    summary = train_rl(config, policy, args.prm, args.out, pool, held_out, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "machine"}, indent=2))
