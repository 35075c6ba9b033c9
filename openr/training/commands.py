"""`openr train ...`: the whole arith recipe, or one stage at a time."""

from __future__ import annotations

import argparse
import importlib
import json

# stage command -> module whose main(argv) runs it (each documents its own flags)
STAGES = {
    "sft": ("openr.training.sft", "train a small policy from scratch on arith gold solutions"),
    "label": ("openr.training.labels.pipeline", "automatic step labels: Math-Shepherd or OmegaPRM rollouts"),
    "prm": ("openr.training.prm_train", "train a step-tag PRM on stepwise-labelled jsonl"),
    "verifier": ("openr.training.verifier", "calibrate a causal LM into a likelihood-verifier PRM on labelled jsonl"),
    "prm-eval": ("openr.training.prm_quality", "ProcessBench F1 and step AUROC of a PRM"),
    "rl": ("openr.rl.commands",
           "online RL on reasoning steps: PPO, GRPO or expert iteration, rewarded by a PRM and/or grading"),
}


def add_parser(subparsers) -> None:
    train = subparsers.add_parser("train", help="grow a policy and a PRM (automatic labels, training, quality)",
                                  description="Training commands. `openr train arith --out DIR` runs the whole "
                                              "recipe; the other commands run one stage (see their --help).")
    commands = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    arith = commands.add_parser(
        "arith", help="the whole recipe: policy + verifier SFT -> labels -> PRMs -> quality report",
        description="Train the arith policy and a stronger verifier, label the policy's steps automatically "
                    "(Math-Shepherd, the verifier completing), calibrate the verifier into the served likelihood "
                    "PRM, train a step-tag PRM to compare, and report both PRMs' quality. Writes OUT/policy, "
                    "OUT/verifier, OUT/labels, OUT/prm, OUT/prm-step-tag and OUT/summary.json; an interrupted "
                    "run resumes. Serve the result with `openr serve --model OUT` (OUT/policy + OUT/prm).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    arith.add_argument("--out", required=True, help="output directory")
    arith.add_argument("--preset", choices=["full", "tiny"], default="full",
                       help="full: the committed openr-arith recipe; tiny: seconds, for tests")
    arith.add_argument("--dtype", choices=["float32", "bfloat16", "auto"], default=None,
                       help="training dtype of every stage (default: the preset's, float32, which gives the same "
                            "model on any CPU); bfloat16 autocast is fast only where the CPU has native bf16 "
                            "(AVX512-BF16, AMX); auto picks it there and float32 elsewhere")
    arith.add_argument("--no-progress", action="store_true", help="hide progress bars")
    arith.set_defaults(func=_run_arith)
    for name, (module, help_text) in STAGES.items():
        stage = commands.add_parser(name, help=help_text, add_help=False)
        stage.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        stage.set_defaults(func=_forward(module))


def _forward(module: str):
    def run(args: argparse.Namespace) -> None:
        importlib.import_module(module).main(args.args)
    return run


def _run_arith(args: argparse.Namespace) -> None:
    from openr.training.recipe import PRESETS, run_recipe, with_dtype

    recipe = PRESETS[args.preset] if args.dtype is None else with_dtype(PRESETS[args.preset], args.dtype)
    summary = run_recipe(recipe, args.out, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
