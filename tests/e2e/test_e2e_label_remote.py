"""End to end for `openr train label --dataset FILE --model URL`: GSM8K-format
problems labelled with rollouts sent to a real `openr serve` (the built-in
openr-arith policy) over HTTP, as the policy or as the completer; the run
resumes, and writes both output formats."""

from __future__ import annotations

import json

import pytest

from openr.tasks import arith
from openr.tasks.grading import is_correct
from openr.tasks.problem import STEP_SEPARATOR, split_steps
from openr.training.labels.pipeline import main
from tests.support.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.e2e
PROBLEMS = 3


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--engine", "hf", "--model", "openr-arith"]) as server:
        yield server


def gsm8k_rows(n: int) -> list[dict]:
    """Arith problems written as GSM8K rows (rationale lines, then '#### N'), so the
    arith policy can solve some of them."""
    rows = []
    for problem in arith.train_problems(n, seed=0):
        rationale = split_steps(problem.solution)[:-1]  # the last step is the boxed answer
        rows.append({"question": problem.question, "answer": "\n".join(rationale) + f"\n#### {problem.answer}"})
    return rows


def label(capsys, *flags: str) -> dict:
    main(list(flags))
    return json.loads(capsys.readouterr().out)


def test_a_gsm8k_file_labelled_through_a_server_url_resumes_and_writes_both_formats(server, tmp_path, capsys):
    rows = gsm8k_rows(PROBLEMS)
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    flags = ["--method", "math_shepherd", "--dataset", str(data), "--model", server.base_url, "--api-key", API_KEY,
             "--k", "2", "--samples-per-problem", "2", "--max-tokens", "96"]
    trl = tmp_path / "trl.jsonl"

    first = label(capsys, *flags, "--out", str(trl), "--num-problems", "2")
    assert first["problems"] == 2 and first["completions"] >= 4 and first["completions_per_second"] > 0
    rest = label(capsys, *flags, "--out", str(trl))  # the same --out: only the third problem is left
    assert rest["problems"] == 1

    records = [json.loads(line) for line in trl.read_text().splitlines()]
    assert sorted({r["id"] for r in records}) == [f"gsm8k-{i}" for i in range(PROBLEMS)]
    assert len(records) == first["records"] + rest["records"]
    gold = {f"gsm8k-{i}": row for i, row in enumerate(rows)}
    for record in records:
        row = gold[record["id"]]
        assert record["prompt"] == row["question"]
        assert len(record["completions"]) == len(record["labels"]) >= 1
        # The last step's label is the grade of the whole solution against the row's '#### N'.
        answer = row["answer"].rpartition("#### ")[2]
        solution = STEP_SEPARATOR.join(record["completions"])
        assert record["labels"][-1] == is_correct(solution, answer, lenient=False)

    # The policy in process this time, and the server as the completer that writes the continuations.
    shepherd = tmp_path / "shepherd.jsonl"
    local_policy = [flag if flag != server.base_url else "openr-arith" for flag in flags]
    summary = label(capsys, *local_policy, "--completer", server.base_url, "--out", str(shepherd),
                    "--num-problems", "1", "--format", "math-shepherd")
    lines = [json.loads(line) for line in shepherd.read_text().splitlines()]
    assert len(lines) == summary["records"] >= 1
    for line in lines:
        assert line["input"].startswith(rows[0]["question"] + " ") and line["task"] == "gsm8k"
        tags = line["input"].count(" ки")
        assert tags >= 1 and line["label"].count(" +\n") + line["label"].count(" -\n") == tags - 1
        assert line["label"].endswith((" +", " -"))


def test_labels_through_a_url_equal_labels_in_process_on_the_same_seeds(server, tmp_path, capsys):
    """One problem in flight on both sides: the hf engine's sampling is reproducible
    per seed only while requests batch the same way."""
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in gsm8k_rows(2)))
    flags = ["--method", "math_shepherd", "--dataset", str(data), "--k", "2", "--samples-per-problem", "2",
             "--max-tokens", "96", "--max-concurrent-problems", "1"]
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    label(capsys, *flags, "--model", "openr-arith", "--out", str(local))
    label(capsys, *flags, "--model", server.base_url, "--api-key", API_KEY, "--out", str(remote))
    assert remote.read_text() == local.read_text() != ""
