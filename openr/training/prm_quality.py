"""PRM quality on held-out labelled solutions: ProcessBench-style F1 and step AUROC
(`openr train prm-eval`).

A PRM is only as useful as its ability to point at the first wrong step, so it
is measured on the policy's own solutions (the ones search will ask it about),
labelled exactly: in the arith world every step can be checked against the
gold chain. Records use TRL's stepwise format
`{"prompt", "completions": [step, ...], "labels": [bool | float, ...], "id"}`.

Run: `openr train prm-eval --prm DIR (--records JSONL | --policy DIR) [...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Iterator, Sequence

from openr.cli_flags import add_flag
from openr.contracts import StepScorer
from openr.prm import load_prm
from openr.prm.formats import AUTO, FORMAT_CHOICES, FORMAT_HELP, PRMFormatError
from openr.tasks.arith import check_step, test_split
from openr.tasks.grading import is_correct
from openr.tasks.problem import Problem, split_steps

THRESHOLD = 0.5  # a step scored (or labelled) below this counts as wrong
DEFAULT_SAMPLES_PER_PROBLEM = 4
DEFAULT_TEMPERATURE = 1.0
DEFAULT_DECODE_BATCH_SIZE = 64  # replies the engine decodes together


def jsonl_records(paths: Sequence[str | Path]) -> Iterator[tuple[str, dict]]:
    """(`path:line`, record) of each non-blank line of the jsonl files."""
    for path in paths:
        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield f"{path}:{number}", json.loads(line)


def check_step_record(record: dict, where: str) -> dict:
    """A stepwise record, checked to have one label per step."""
    if len(record["completions"]) != len(record["labels"]):
        raise ValueError(f"{where}: {len(record['completions'])} steps but {len(record['labels'])} labels")
    return record


def load_step_records(paths: Sequence[str | Path]) -> list[dict]:
    """Stepwise records from jsonl files, checked to have one label per step."""
    return [check_step_record(record, where) for where, record in jsonl_records(paths)]


def first_below(values: Sequence[float], threshold: float = THRESHOLD) -> int | None:
    """Index of the first value below `threshold` (bools count as 0/1), or None."""
    return next((i for i, value in enumerate(values) if float(value) < threshold), None)


def processbench_f1(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[float]],
                    threshold: float = THRESHOLD) -> dict:
    """ProcessBench's metric: the predicted first wrong step (first score below
    `threshold`, or none) against the labelled one (first label below 0.5, or none).

    error_accuracy: exact index match on solutions with a wrong step;
    correct_accuracy: "none" predicted on fully correct ones; f1: their
    harmonic mean. A part without solutions is None, and so is f1 then.
    """
    hits = {True: [], False: []}  # keyed by "solution has a wrong step"
    for solution_scores, solution_labels in zip(scores, labels, strict=True):
        truth = first_below(solution_labels)
        hits[truth is not None].append(first_below(solution_scores, threshold) == truth)
    error_accuracy = sum(hits[True]) / len(hits[True]) if hits[True] else None
    correct_accuracy = sum(hits[False]) / len(hits[False]) if hits[False] else None
    f1 = None
    if error_accuracy is not None and correct_accuracy is not None:
        total = error_accuracy + correct_accuracy
        f1 = 2 * error_accuracy * correct_accuracy / total if total else 0.0
    return {"f1": f1, "error_accuracy": error_accuracy, "correct_accuracy": correct_accuracy,
            "num_erroneous": len(hits[True]), "num_correct": len(hits[False])}


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic (tied scores get
    their average rank); None unless both classes occur."""
    num_positive = sum(positives)
    num_negative = len(positives) - num_positive
    if not num_positive or not num_negative:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for index in order[start : end + 1]:
            ranks[index] = (start + end) / 2 + 1  # 1-based average rank of the tie group
        start = end + 1
    positive_rank_sum = sum(rank for rank, positive in zip(ranks, positives) if positive)
    return (positive_rank_sum - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative)


def prm_metrics(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[float]],
                threshold: float = THRESHOLD) -> dict:
    """ProcessBench F1 parts plus step-level AUROC (labels read as hard at 0.5)."""
    flat_scores = [s for solution in scores for s in solution]
    flat_positive = [float(label) >= THRESHOLD for solution in labels for label in solution]
    return {**processbench_f1(scores, labels, threshold), "step_auroc": auroc(flat_scores, flat_positive),
            "num_steps": len(flat_scores)}


async def _score_records(scorer: StepScorer, records: Sequence[dict]) -> list[list[float]]:
    by_question: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_question.setdefault(record["prompt"], []).append(index)
    scores: list[list[float]] = [[] for _ in records]
    # One call per question, like search makes: its candidates share a batch.
    for question, indices in by_question.items():
        for index, row in zip(indices, await scorer.score(question, [records[i]["completions"] for i in indices])):
            scores[index] = row
    return scores


def evaluate_prm(scorer: StepScorer, records: Sequence[dict], threshold: float = THRESHOLD) -> dict:
    """Score every record with `scorer` and return `prm_metrics`. Runs its own event
    loop, so call it from synchronous code."""
    scores = asyncio.run(_score_records(scorer, records))
    return prm_metrics(scores, [record["labels"] for record in records], threshold)


def _gold_values(problem: Problem) -> list[int]:
    """The running values of the gold chain: the start, then the result of each step."""
    equations = split_steps(problem.solution)[:-1]  # gold steps are exactly "a op b = c"
    return [int(equations[0].split()[0])] + [int(step.split(" = ")[1]) for step in equations]


def _moves(step: str, before: int, after: int) -> bool:
    """Whether an equation step takes the carried value `before` to `after` correctly."""
    compact = "".join(step.split())
    starts = compact.startswith(str(before)) and not compact[len(str(before)):][:1].isdigit()
    return starts and compact.endswith(f"={after}") and check_step(step) is True


def label_by_checking(problem: Problem, solution_text: str) -> list[bool]:
    """Per step of `solution_text`: can this prefix still reach the right answer?

    The arith chain is fixed left to right, one operation per step (the format
    the policy learns), so equation step k is right when it is arithmetically
    right (`check_step`), starts from the value carried from step k-1 and lands
    on the gold value after k operations. That catches slips, wrongly copied
    values and wrong or skipped operations, whereas a step can pass `check_step`
    on a wrong carried value. A step with no equation is read as the answer and
    is right when all operations are done and the answer is correct. The first
    wrong step makes it and every later step False.
    """
    values = _gold_values(problem)
    labels, right, done = [], True, 0
    for step in split_steps(solution_text):
        if check_step(step) is None:
            right = right and done == len(values) - 1 and is_correct(step, problem.answer, lenient=False)
        else:
            right = right and done + 1 < len(values) and _moves(step, values[done], values[done + 1])
            done += 1
        labels.append(right)
    return labels


def sample_solutions(policy_dir: str | Path, questions: Sequence[str], samples_per_question: int,
                     temperature: float, seed: int, decode_batch_size: int = DEFAULT_DECODE_BATCH_SIZE,
                     progress: bool = True) -> list[list[str]]:
    """`samples_per_question` seeded replies of a policy checkpoint to each question,
    sampled through the serving engine (`openr.training.policy_accuracy.engine_replies`)."""
    from openr.engine.hf_engine import HFEngine
    from openr.training.policy_accuracy import engine_replies

    if samples_per_question < 1 or temperature <= 0:
        raise ValueError("need samples_per_question >= 1 and temperature > 0")

    async def sample() -> list[list[str]]:
        engine = HFEngine(str(policy_dir), decode_batch_size=decode_batch_size)
        await engine.start()
        try:
            return await engine_replies(engine, questions, temperature, samples_per_question, seed, progress,
                                        desc="sample")
        finally:
            await engine.close()

    return asyncio.run(sample())


def policy_records(policy_dir: str | Path, problems: Sequence[Problem],
                   samples_per_problem: int = DEFAULT_SAMPLES_PER_PROBLEM,
                   temperature: float = DEFAULT_TEMPERATURE, seed: int = 0, progress: bool = True) -> list[dict]:
    """A labelled held-out set of the policy's own solutions to arith `problems`
    (stepwise records labelled by `label_by_checking`; empty replies dropped)."""
    replies = sample_solutions(policy_dir, [p.question for p in problems], samples_per_problem, temperature,
                               seed, progress=progress)
    records = []
    for problem, samples in zip(problems, replies):
        for index, text in enumerate(samples):
            steps = split_steps(text)
            if steps:
                records.append({"prompt": problem.question, "completions": steps,
                                "labels": label_by_checking(problem, text), "id": f"{problem.id}-s{index}"})
    return records


def main(argv: list[str] | None = None) -> None:
    """Command line: metrics of a PRM (either kind) on a jsonl set, or on fresh policy samples."""
    parser = argparse.ArgumentParser(prog="openr train prm-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--prm", required=True, help="PRM checkpoint directory, of any format `openr serve --prm` "
                        "loads in process.")
    parser.add_argument("--prm-format", choices=FORMAT_CHOICES, default=AUTO,
                        help=f"The PRM's format, as `openr serve --prm-format` takes it: {FORMAT_HELP}. auto reads "
                             "it from the checkpoint; a math-shepherd PRM trained without --lora is a plain causal LM "
                             "and must be named.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", nargs="+", help="Labelled stepwise jsonl files to evaluate on.")
    source.add_argument("--policy", help="Policy checkpoint whose samples on the arith test split are labelled.")
    add_flag(parser, "--num-problems", old=["--num_problems"], type=int, default=len(test_split()),
             help="Test-split problems to sample.")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES_PER_PROBLEM, help="Samples per problem.")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="Sampling temperature.")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed.")
    add_flag(parser, "--save-records", old=["--save_records"],
             help="Write the sampled, labelled records to this jsonl file.")
    args = parser.parse_args(argv)
    try:
        scorer = load_prm(args.prm, prm_format=args.prm_format)
    except PRMFormatError as exc:
        parser.error(str(exc))
    if args.records:
        records = load_step_records(args.records)
    else:
        records = policy_records(args.policy, test_split()[: args.num_problems], args.samples,
                                 args.temperature, args.seed)
        if args.save_records:
            Path(args.save_records).write_text("".join(json.dumps(r) + "\n" for r in records))
    print(json.dumps(evaluate_prm(scorer, records), indent=2))


if __name__ == "__main__":
    main()
