"""Greedy accuracy of openr-arith's policy and verifier, by level, on the arith
held-out split: all 500 problems (the model card's per-operation row) and the
200 that `openr eval --dataset arith --limit 200` draws with seed 0 (what
docs/eval's search rows are read against). Both checkpoints decode greedily as
`openr train arith` grades them (`greedy_grades`), so the whole-split figures
repeat `summary.json`'s 38.6% and 83.6%.

    python -m bench.greedy_levels --out bench/results/greedy_levels.json
"""

from __future__ import annotations

import argparse
import json

from bench.results_file import add_result_flags, write_result
from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, POLICY_SUBDIR, PRM_SUBDIR
from openr.evaluation.answers import select_problems
from openr.evaluation.settings import ARITH_DATASET
from openr.rl.trainer import accuracy_by_level
from openr.tasks import arith
from openr.training.policy_accuracy import greedy_grades

BUNDLE = BUILTIN_BUNDLES[ARITH_ALIAS]
EVAL_DRAW = {"limit": 200, "seed": 0}  # docs/eval/openr-arith's `openr eval --limit 200` (its --seed default)


def grade_split(model_dir, problems, draw_ids: set[str]) -> dict:
    """Accuracy and accuracy by level on every problem, and on the eval's draw."""
    grades = greedy_grades(model_dir, problems, progress=False)
    drawn = [g for p, g in zip(problems, grades) if p.id in draw_ids]
    return {"accuracy": round(sum(grades) / len(grades), 4),
            "by_level": {k: round(v, 4) for k, v in accuracy_by_level(problems, grades).items()},
            "eval_draw_accuracy": round(sum(drawn) / len(drawn), 4) if drawn else None,
            "eval_draw_right": sum(drawn)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=None,
                        help="grade only the split's first N problems (default: all 500)")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    problems = arith.test_split()[:args.problems]
    kept = {p.id for p in problems}
    draw_ids = {p.id for p in select_problems(ARITH_DATASET, EVAL_DRAW["limit"], EVAL_DRAW["seed"])} & kept
    models = {"policy": BUNDLE / POLICY_SUBDIR, "verifier": BUNDLE / PRM_SUBDIR}
    figures = {"problems": len(problems), "eval_draw": {**EVAL_DRAW, "problems": len(draw_ids)},
               "models": {name: grade_split(path, problems, draw_ids) for name, path in models.items()}}
    record = write_result(args.out, "greedy_levels", argv, args.note, figures)
    print(json.dumps(record["models"], indent=2))


if __name__ == "__main__":
    main()
