"""Math-Shepherd against OmegaPRM step labels, like for like.

Both methods label the same arith training problems, with the same policy
writing the solutions, the same completer (the bundle's verifier, as
`openr train arith` does) and the same k completions per estimate. For each
it reports what the labels cost per written label and per measured label
(OmegaPRM infers part of its labels from its neighbours instead of measuring
them), and how often each label agrees with the exact label: in the arith
world every step can be checked against the gold chain
(`openr.training.prm_quality.label_by_checking`).

    python -m bench.label_cost --problems 40 --k 4 --out bench/results/label_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.results_file import add_result_flags, write_result
from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES
from openr.engine.hf_engine import HFEngine
from openr.tasks import arith
from openr.tasks.problem import STEP_SEPARATOR
from openr.training.labels.omegaprm import OmegaPRMConfig
from openr.training.labels.pipeline import label_problems
from openr.training.labels.shepherd import ShepherdConfig
from openr.training.prm_quality import label_by_checking

BUNDLE = BUILTIN_BUNDLES[ARITH_ALIAS]  # openr-arith, inside the package
PROBLEM_SEED = 1  # the stream `openr train arith` labels from


def agreement(records: list[dict], problems: dict) -> dict:
    """How many written (and measured) labels match the exact label of their step."""
    written = matched = measured = measured_matched = 0
    for record in records:
        exact = label_by_checking(problems[record["id"]], STEP_SEPARATOR.join(record["completions"]))
        for label, is_measured, truth in zip(record["labels"], record["measured"], exact):
            hit = bool(label) == truth
            written, matched = written + 1, matched + hit
            measured, measured_matched = measured + is_measured, measured_matched + (hit and is_measured)
    return {"labels_checked": written, "agree": round(matched / written, 3) if written else None,
            "measured_checked": measured, "measured_agree": round(measured_matched / measured, 3) if measured
            else None}


async def run(num_problems: int, k: int, omegaprm_budget: int, out: Path) -> dict:
    problems = arith.train_problems(num_problems, seed=PROBLEM_SEED)
    by_id = {p.id: p for p in problems}
    policy, completer = HFEngine(str(BUNDLE / "policy")), HFEngine(str(BUNDLE / "prm"))
    await policy.start()
    await completer.start()
    results = {}
    try:
        for method, config in (("math_shepherd", ShepherdConfig(k=k)),
                               ("omegaprm", OmegaPRMConfig(k=k, rollout_budget=omegaprm_budget))):
            path = out / f"{method}.jsonl"
            started = time.monotonic()
            stats = await label_problems(method, policy, problems, config, path, completer=completer)
            records = [json.loads(line) for line in path.read_text().splitlines()]
            results[method] = {**stats.summary(), "minutes": round((time.monotonic() - started) / 60, 2),
                               "completions_per_measured_label": round(stats.completions / stats.measured_steps, 2)
                               if stats.measured_steps else None, **agreement(records, by_id)}
    finally:
        await policy.close()
        await completer.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=40, help="arith training problems both methods label")
    parser.add_argument("--k", type=int, default=4, help="completions per estimate, both methods")
    parser.add_argument("--omegaprm-budget", type=int, default=OmegaPRMConfig.rollout_budget,
                        help="OmegaPRM's completions per problem")
    parser.add_argument("--keep-labels", type=Path, help="keep the label files here (default: a temporary folder)")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        labels = args.keep_labels or Path(scratch)
        results = asyncio.run(run(args.problems, args.k, args.omegaprm_budget, labels))
    record = write_result(args.out, "label_cost", argv, args.note,
                          {"problems": args.problems, "k": args.k, "omegaprm_budget": args.omegaprm_budget, **results})
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
