"""One policy chosen on arith-val, graded once on the test split, paired with the shipped policy.

`bench.rl_runs --test` does this for `openr train rl` runs; this is the same
grading for a policy that a bench wrote elsewhere (`bench.rl_search_expert
--keep DIR`): greedy on all 500 test problems, by level, paired with the
shipped policy (problems only one of them gets right, a two-sided sign test).
Report the test split once, for the policy chosen; never choose with it.

    python -m bench.policy_test_once --policy runs/round-2/search-0.0001-150-1 \\
        --chosen-by "bench/results/rl_search_expert_round2.json: best on arith-val" \\
        --out bench/results/rl_search_expert_test.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.results_file import add_result_flags, write_result
from bench.rl_runs import paired
from bench.sft_control import START, label
from openr.rl.trainer import accuracy_by_level
from openr.tasks import arith
from openr.training.policy_accuracy import greedy_grades


def graded(policy: Path, problems: list) -> tuple[dict, list[bool]]:
    grades = greedy_grades(policy, problems, progress=True)
    return {"policy": label(policy), "accuracy": round(sum(grades) / len(grades), 4),
            "by_level": {k: round(v, 4) for k, v in accuracy_by_level(problems, grades).items()}}, grades


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True, help="the policy chosen on arith-val")
    parser.add_argument("--chosen-by", required=True, help="how it was chosen, recorded with the grades")
    parser.add_argument("--start", type=Path, default=START, help="the policy it is paired with")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    for flag in ("policy", "start"):
        if not (getattr(args, flag) / "config.json").exists():
            parser.error(f"--{flag} {getattr(args, flag)} is not a policy checkpoint (no config.json)")
    problems = arith.test_split()
    start, start_grades = graded(args.start, problems)
    chosen, grades = graded(args.policy, problems)
    figures = {"split": "arith test", "problems": len(problems), "chosen_by": args.chosen_by, "start": start,
               "chosen": {**chosen, **paired(start_grades, grades)},
               "grades": {"start": [int(g) for g in start_grades], "chosen": [int(g) for g in grades]}}
    record = write_result(args.out, "policy_test_once", argv, args.note, figures)
    print(json.dumps({key: record[key] for key in ("start", "chosen")}, indent=2))


if __name__ == "__main__":
    main()
