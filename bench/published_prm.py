"""A PRM trained here in a published format, measured beside the shipped one.

Issue 31's arith path, every stage through the commands a user runs. The labels
come through URLs: `openr train label` against two running `openr serve`s, the
policy writing solutions and the bundled verifier completing them, as the
recipe (`openr train arith`) labels in process:

    openr serve --engine hf --port 8129 --api-key k &
    openr serve --engine hf --model openr/models/openr-arith/prm --port 8128 --api-key k &
    openr train label --method math_shepherd --model http://127.0.0.1:8129/v1 \\
        --completer http://127.0.0.1:8128/v1 --api-key k --num-problems 300 --problem-seed 1 \\
        --k 4 --samples-per-problem 2 --max-concurrent-problems 8 --out labels.jsonl | tee label.log
    openr train prm --format math-shepherd --init-from openr/models/openr-arith/prm \\
        --train labels.jsonl --num-epochs 4 --out prm-ms
    python -m bench.published_prm --labels labels.jsonl --label-log label.log --prm prm-ms \\
        --prm-format math-shepherd --out bench/results/published_prm_arith.json

This writes the labels' statistics (the share of steps labelled good, and the
summary the labeller printed last: its completions a second) and the
ProcessBench-style F1 and step AUROC of the trained PRM and of the shipped one,
on the same held-out policy solutions the recipe measures its PRMs on (the
first 150 test problems, 4 samples each, labelled by checking every step). The
search it drives is an `openr eval` run of its own (docs/eval/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.results_file import add_result_flags, write_result
from bench.sft_control import START, label
from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, PRM_SUBDIR
from openr.prm import check_prm, load_prm
from openr.prm.formats import AUTO, FORMAT_CHOICES
from openr.tasks.arith import test_split
from openr.training.prm_quality import evaluate_prm, load_step_records, policy_records

SHIPPED_PRM = BUILTIN_BUNDLES[ARITH_ALIAS] / PRM_SUBDIR


def label_statistics(records: list[dict]) -> dict:
    """How many records and steps, and the share of steps (and of whole
    solutions) labelled good, a label read as good at 0.5 or above."""
    steps = [float(value) >= 0.5 for record in records for value in record["labels"]]
    return {"records": len(records), "problems": len({record["prompt"] for record in records}),
            "steps": len(steps), "good_steps": round(sum(steps) / len(steps), 4) if steps else None,
            "all_good_solutions": round(sum(all(float(v) >= 0.5 for v in r["labels"]) for r in records)
                                        / len(records), 4) if records else None}


def printed_summary(path: Path) -> dict:
    """The last JSON object a command printed (`openr train label`'s summary) in its saved output."""
    text = path.read_text()
    start = text.rfind("\n{")
    try:
        summary = json.loads(text[start + 1:] if start >= 0 else text)
    except ValueError:
        summary = None
    if not isinstance(summary, dict) or "completions_per_second" not in summary:
        raise ValueError(f"{path} does not end with the JSON summary openr train label prints")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--labels", type=Path, nargs="+", required=True, help="the labels the PRM was trained on")
    parser.add_argument("--label-log", type=Path, default=None,
                        help="the saved output of the `openr train label` run, whose closing summary is recorded")
    parser.add_argument("--prm", type=Path, required=True, help="the PRM trained on them")
    parser.add_argument("--prm-format", choices=FORMAT_CHOICES, default=AUTO, help="its format")
    parser.add_argument("--problems", type=int, default=150, help="held-out test problems sampled")
    parser.add_argument("--samples", type=int, default=4, help="policy samples per problem")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    if min(args.problems, args.samples) < 1:
        parser.error("--problems and --samples must be positive")
    try:
        labeller = printed_summary(args.label_log) if args.label_log else None
        check_prm(args.prm, args.prm_format)  # before sampling the held-out set
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    held_out = policy_records(START, test_split()[: args.problems], args.samples)
    prms = {"trained": (args.prm, args.prm_format), "shipped": (SHIPPED_PRM, AUTO)}
    quality = {name: {"prm": label(path), "format": fmt, **evaluate_prm(load_prm(path, prm_format=fmt), held_out)}
               for name, (path, fmt) in prms.items()}
    figures = {"labels": {"files": [label(path) for path in args.labels],
                          **label_statistics(load_step_records(args.labels)), "labeller": labeller},
               "held_out": {"policy": label(START), "problems": args.problems, "samples": args.samples,
                            "solutions": len(held_out)},
               "quality": quality}
    record = write_result(args.out, "published_prm", argv, args.note, figures)
    print(json.dumps({key: record[key] for key in ("labels", "quality")}, indent=2))


if __name__ == "__main__":
    main()
