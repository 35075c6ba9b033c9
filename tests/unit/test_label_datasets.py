"""`openr train label --dataset`: problems read from GSM8K- and MATH-format jsonl
(the readers `openr eval` uses), graded with math-verify, written in TRL's stepwise
format or Math-Shepherd's tagged one. A scripted policy, no model."""

import asyncio
import json

import pytest

from openr.contracts import Step
from openr.engine.base import PreparedPrompt
from openr.tasks import load_problems
from openr.tasks.problem import STEP_SEPARATOR
from openr.training.labels.formats import MATH_SHEPHERD, TRL, math_shepherd_line
from openr.training.labels.pipeline import label_problems
from openr.training.labels.shepherd import ShepherdConfig

BAD_STEP = "Then I guess wildly."
GSM8K_ROW = {"question": "Tom has 400 apples and buys 600 more. How many now?",
             "answer": "He has 400 + 600 = <<400+600=1000>>1000.\n#### 1,000"}
MATH_ROW = {"problem": "What is $2/4$ in lowest terms?", "final_answer": "\\frac{1}{2}", "level": "Level 1"}


class ScriptedPolicy:
    """From the bare question it writes `solution` (two steps); from any prefix it
    finishes with `right` unless the prefix holds BAD_STEP, then with a wrong answer."""

    def __init__(self, solution: list[str], right: str):
        self.solution, self.right = solution, right

    async def prepare_chat(self, messages: list[dict]) -> PreparedPrompt:
        return PreparedPrompt(f"Q: {messages[-1]['content']}\nA: ", 1)

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        def continue_(prefix: str) -> str:
            if prefix.endswith("A: "):
                return STEP_SEPARATOR.join(self.solution)
            return "\\boxed{-7}" if BAD_STEP in prefix else f"So \\boxed{{{self.right}}}"

        return [[Step(continue_(p), 3, "eos", 0.0) for _ in range(n)] for p in prefixes]


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _label(policy, problems, out, output_format=TRL):
    config = ShepherdConfig(k=2, samples_per_problem=1)
    return asyncio.run(label_problems("math_shepherd", policy, problems, config, out, progress=False,
                                      output_format=output_format))


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_gsm8k_file_is_labelled_and_graded_with_math_verify(tmp_path):
    problems = load_problems(_write(tmp_path / "gsm8k.jsonl", [GSM8K_ROW]))
    assert problems[0].answer == "1000" and problems[0].source == "gsm8k"
    # "1000.0" is graded equal to the gold "1,000", the commas dropped as the GSM8K reader does.
    policy = ScriptedPolicy(["400 + 600 = 1000.", "The answer is \\boxed{1000.0}"], right="1000.0")
    stats = _label(policy, problems, tmp_path / "labels.jsonl")
    (record,) = _lines(tmp_path / "labels.jsonl")
    assert record["prompt"] == GSM8K_ROW["question"] and record["id"] == "gsm8k-0"
    assert record["completions"] == policy.solution and record["labels"] == [True, True]
    assert stats.problems == 1 and stats.completions == 1 + 2  # the solution, then k for its first step


def test_a_math_file_labels_a_wrong_step_and_all_after_it_negative(tmp_path):
    problems = load_problems(_write(tmp_path / "math.jsonl", [MATH_ROW]))
    # Continuations after the first step answer 0.5: math-verify grades it equal to \frac{1}{2}.
    policy = ScriptedPolicy(["Halve both.", BAD_STEP, "It is \\boxed{-7}"], right="0.5")
    _label(policy, problems, tmp_path / "labels.jsonl")
    (record,) = _lines(tmp_path / "labels.jsonl")
    assert record["id"] == "math-0" and record["labels"] == [True, False, False]


def test_math_shepherd_format_tags_each_step_and_marks_it_plus_or_minus(tmp_path):
    problems = load_problems(_write(tmp_path / "gsm8k.jsonl", [GSM8K_ROW]))
    solution = ["400 + 600 = 1000.", BAD_STEP, "The answer is \\boxed{-7}"]
    _label(ScriptedPolicy(solution, right="1000"), problems, tmp_path / "shepherd.jsonl", MATH_SHEPHERD)
    (line,) = _lines(tmp_path / "shepherd.jsonl")
    question = GSM8K_ROW["question"]
    assert line["input"] == f"{question} 400 + 600 = 1000. ки\n{BAD_STEP} ки\nThe answer is \\boxed{{-7}} ки"
    assert line["label"] == f"{question} 400 + 600 = 1000. +\n{BAD_STEP} -\nThe answer is \\boxed{{-7}} -"
    assert line["task"] == "gsm8k" and line["id"] == "gsm8k-0"


def test_soft_labels_are_cut_at_any_correct_completion_in_math_shepherd_format():
    record = {"prompt": "Q?", "completions": ["a", "b", "c"], "labels": [0.5, 0.0, 1.0], "mc": [0.5, 0.0, 1.0],
              "id": "math-3"}
    line = math_shepherd_line(record, "math")
    assert line == {"input": "Q? a ки\nb ки\nc ки", "label": "Q? a +\nb -\nc +", "task": "math", "id": "math-3"}


def test_a_rerun_appends_only_new_problems_in_the_same_format(tmp_path):
    rows = [GSM8K_ROW, {**GSM8K_ROW, "question": "Tom has 1000 apples. How many?", "answer": "#### 1000"}]
    data = _write(tmp_path / "gsm8k.jsonl", rows)
    policy = ScriptedPolicy(["He has 1000.", "The answer is \\boxed{1000}"], right="1000")
    out = tmp_path / "shepherd.jsonl"
    _label(policy, load_problems(data, limit=1), out, MATH_SHEPHERD)
    stats = _label(policy, load_problems(data), out, MATH_SHEPHERD)
    assert stats.problems == 1
    assert [line["id"] for line in _lines(out)] == ["gsm8k-0", "gsm8k-1"]
    with pytest.raises(ValueError, match="math-shepherd-format records, not trl"):
        _label(policy, load_problems(data), out, TRL)


def test_the_summary_reports_completions_a_second(tmp_path):
    problems = load_problems(_write(tmp_path / "gsm8k.jsonl", [GSM8K_ROW]))
    stats = _label(ScriptedPolicy(["Step.", "\\boxed{1000}"], right="1000"), problems, tmp_path / "l.jsonl")
    summary = stats.summary()
    assert summary["completions"] == 3 and summary["seconds"] > 0
    assert summary["completions_per_second"] == round(3 / stats.seconds, 2)
