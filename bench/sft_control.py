"""RL's control: more SFT on gold solutions from the same starting policy.

Issue 26 asks whether RL buys more than plain SFT would at the same compute.
This continues `openr train sft` from the shipped openr-arith policy
(`--init-from`, new problems drawn with a new seed, a fresh warmup and cosine
schedule) for a number of gold solutions, grades the result greedily on all
500 problems of arith-val (the split RL runs are chosen on), by level, beside
the starting policy, and records the minutes and the machine, so it reads
against `bench/results/rl_runs/`'s samples and minutes.

    python -m bench.sft_control --steps 1024 --out bench/results/sft_control.json

`--start DIR` continues another policy instead, e.g. the one the command above
keeps (`--keep DIR`), as the control for RL run on top of it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.results_file import add_result_flags, write_result
from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, POLICY_SUBDIR
from openr.rl.trainer import accuracy_by_level
from openr.tasks import arith
from openr.training.policy_accuracy import greedy_grades
from openr.training.sft import SFTConfig, train_policy

START = BUILTIN_BUNDLES[ARITH_ALIAS] / POLICY_SUBDIR


def label(path: Path) -> str:
    """A policy's path as the result file records it: from the repository root when inside it."""
    root = START.parents[3]
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def grade(model_dir: Path, problems: list) -> dict:
    grades = greedy_grades(model_dir, problems, progress=True)
    return {"accuracy": round(sum(grades) / len(grades), 4), "right": sum(grades),
            "by_level": {k: round(v, 4) for k, v in accuracy_by_level(problems, grades).items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1024,
                        help="optimizer steps of --batch-size gold solutions (default 1024: 16,384 solutions, "
                             "grpo-d's samples over 16 rounds)")
    parser.add_argument("--batch-size", type=int, default=16, help="gold solutions per step (the shipped recipe's)")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="peak learning rate of the new schedule (the shipped run's was 3e-3 decaying to 3e-4)")
    parser.add_argument("--seed", type=int, default=1, help="draws problems the shipped run (seed 0) did not")
    parser.add_argument("--start", type=Path, default=START,
                        help="the policy to continue (default: the shipped openr-arith policy)")
    parser.add_argument("--keep", type=Path, default=None, help="save the trained policy here (default: a temp dir)")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    config = SFTConfig(init_from=str(args.start), max_steps=args.steps, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, seed=args.seed)
    problems = arith.validation_split()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "policy"
        trained = train_policy(config, out)
        figures = {"split": "arith-val", "problems": len(problems), "start": label(args.start),
                   "gold_solutions": args.steps * args.batch_size, "config": {
                       k: v for k, v in vars(config).items() if k in ("max_steps", "batch_size", "learning_rate",
                                                                      "seed", "warmup_steps", "min_lr_ratio")},
                   "train": {k: trained[k] for k in ("minutes", "final_loss", "steps") if k in trained},
                   "models": {"start": grade(args.start, problems), "more_sft": grade(out, problems)}}
    record = write_result(args.out, "sft_control", argv, args.note, figures)
    print(json.dumps({name: m["accuracy"] for name, m in record["models"].items()}, indent=2))


if __name__ == "__main__":
    main()
