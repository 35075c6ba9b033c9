"""Automatic step labels (Math-Shepherd, OmegaPRM) against an oracle policy: fast, no model.

The oracle continues any arith prefix correctly from the last value written, so a
prefix whose steps are all right completes to the gold answer and a prefix holding
a wrong step completes to a wrong one: the true label of every step is known.
"""

import asyncio
import json
import random
import re

import pytest

from openr.contracts import Step
from openr.engine.base import PreparedPrompt
from openr.tasks import arith
from openr.tasks.problem import STEP_SEPARATOR, Problem, split_steps
from openr.training.labels.omegaprm import OmegaPRMConfig, search_cost
from openr.training.labels.pipeline import METHODS, done_path, label_problems
from openr.training.labels.shepherd import ShepherdConfig

USER, ASSISTANT = "<user>", "<assistant>"
_STEP = re.compile(r"(-?\d+) ([-+*/]) (\d+) = (-?\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


class OraclePolicy:
    """Continues every prefix with the rest of the gold chain of operations, applied to
    the last value the prefix wrote. From the bare prompt, a question listed in
    `first_attempts` gets those solutions instead, cycled over the samples of a call."""

    def __init__(self, problems: list[Problem], first_attempts: dict[str, list[str]] | None = None):
        self.problems = {p.question: p for p in problems}
        self.first_attempts = first_attempts or {}
        self.prefixes_seen: list[str] = []

    async def prepare_chat(self, messages: list[dict]) -> PreparedPrompt:
        text = f"{USER}{messages[-1]['content']}{ASSISTANT}"
        return PreparedPrompt(text, len(text))

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        self.prefixes_seen.extend(prefixes)
        return [[self._step(self._continue(prefix, i), stop, max_tokens) for i in range(n)] for prefix in prefixes]

    def _continue(self, prefix: str, sample: int) -> str:
        question, written = prefix.removeprefix(USER).split(ASSISTANT, 1)
        if not written and question in self.first_attempts:
            attempts = self.first_attempts[question]
            return attempts[sample % len(attempts)]
        steps = split_steps(written)
        if steps and "boxed" in steps[-1]:
            return ""
        gold = [_STEP.fullmatch(step).groups() for step in split_steps(self.problems[question].solution)[:-1]]
        value = int(_STEP.fullmatch(steps[-1]).group(4)) if steps else int(gold[0][0])
        rest = []
        for _, op, operand, _ in gold[len(steps):]:
            result = _OPS[op](value, int(operand))
            rest.append(f"{value} {op} {operand} = {result}")
            value = result
        rest.append(f"The answer is \\boxed{{{value}}}")
        return STEP_SEPARATOR.join(rest)

    @staticmethod
    def _step(text: str, stop, max_tokens: int) -> Step:
        hits = [text.find(s) for s in stop if s and s in text]
        if hits:
            return Step(text[:min(hits)], min(hits), "step", 0.0)
        if len(text) > max_tokens:  # one token per character
            return Step(text[:max_tokens], max_tokens, "length", 0.0)
        return Step(text, len(text), "eos", 0.0)


def _problems(n: int, ops: int, seed: int = 0) -> list[Problem]:
    return arith.train_problems(n, seed=seed, min_ops=ops, max_ops=ops)


def _config(method: str, **overrides):
    defaults = {"k": 2, "max_concurrent_problems": 3}
    if method == "math_shepherd":
        return ShepherdConfig(**{"samples_per_problem": 2, **defaults, **overrides})
    return OmegaPRMConfig(**{**defaults, **overrides})


def _label(method, policy, problems, config, out):
    return asyncio.run(label_problems(method, policy, problems, config, out, progress=False))


def _records(out) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("label_type", ["hard", "soft"])
def test_gold_steps_are_labelled_positive(tmp_path, method, label_type):
    problems = _problems(3, ops=4)
    out = tmp_path / "labels.jsonl"
    _label(method, OraclePolicy(problems), problems, _config(method, label_type=label_type), out)
    records = _records(out)
    gold = {p.id: p for p in problems}
    assert sorted(r["id"] for r in records) == sorted(gold)  # identical samples are labelled once
    for record in records:
        assert record["prompt"] == gold[record["id"]].question
        assert record["completions"] == split_steps(gold[record["id"]].solution)
        expected = True if label_type == "hard" else 1.0
        assert record["labels"] == [expected] * len(record["completions"])
        assert record["method"] == method


@pytest.mark.parametrize("method", sorted(METHODS))
def test_wrong_step_and_all_later_steps_are_labelled_negative(tmp_path, method):
    problem = _problems(1, ops=6)[0]
    for wrong in range(problem.level):
        corrupted = arith.corrupt_step(problem.solution, wrong, random.Random(wrong))
        # OmegaPRM only searches states that are sometimes right, so half its root samples are gold.
        attempts = [corrupted] if method == "math_shepherd" else [corrupted, problem.solution]
        policy = OraclePolicy([problem], {problem.question: attempts})
        out = tmp_path / f"{method}-{wrong}.jsonl"
        _label(method, policy, [problem], _config(method, label_type="soft"), out)
        steps = split_steps(corrupted)
        [record] = [r for r in _records(out) if r["completions"] == steps]
        assert record["labels"] == [1.0] * wrong + [0.0] * (len(steps) - wrong)


class HopelessPolicy(OraclePolicy):
    """Writes its `first_attempts` from the question, but cannot finish any prefix:
    every continuation boxes a wrong answer. A weak policy, in the extreme."""

    def _continue(self, prefix: str, sample: int) -> str:
        written = prefix.split(ASSISTANT, 1)[1]
        return super()._continue(prefix, sample) if not written else "The answer is \\boxed{-1}"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_completer_writes_every_continuation_and_labels_follow_the_steps(tmp_path, method):
    problem = _problems(1, ops=5)[0]
    wrong = 2
    corrupted = arith.corrupt_step(problem.solution, wrong, random.Random(0))
    attempts = [corrupted] if method == "math_shepherd" else [corrupted, problem.solution]
    steps = split_steps(corrupted)
    prompt = f"{USER}{problem.question}{ASSISTANT}"

    def label(completer):
        policy = HopelessPolicy([problem], {problem.question: attempts})
        out = tmp_path / f"{method}-{completer is not None}.jsonl"
        asyncio.run(label_problems(method, policy, [problem], _config(method, label_type="soft"), out,
                                   progress=False, completer=completer))
        [record] = [r for r in _records(out) if r["completions"] == steps]
        return policy, record["labels"]

    completer = OraclePolicy([problem])
    policy, labels = label(completer)
    assert labels == [1.0] * wrong + [0.0] * (len(steps) - wrong)
    assert set(policy.prefixes_seen) == {prompt}  # the policy only writes whole solutions
    assert completer.prefixes_seen and prompt not in completer.prefixes_seen
    if method == "math_shepherd":
        # Completing its own prefixes, the hopeless policy labels its right steps wrong too.
        assert label(None)[1] == [0.0] * len(steps)


@pytest.mark.parametrize("wrong", range(8))
def test_omegaprm_binary_search_finds_first_error_within_budget(tmp_path, wrong):
    problem = _problems(1, ops=8, seed=1)[0]
    corrupted = arith.corrupt_step(problem.solution, wrong, random.Random(wrong))
    steps = split_steps(corrupted)
    k = 4
    budget = k + k * 4  # the root's estimate, then ceil(log2(9 steps)) = 4 estimates at most
    policy = OraclePolicy([problem], {problem.question: [corrupted, problem.solution]})
    stats = _label("omegaprm", policy, [problem], _config("omegaprm", k=k, rollout_budget=budget), tmp_path / "o.jsonl")
    [record] = [r for r in _records(tmp_path / "o.jsonl") if r["completions"] == steps]
    assert record["labels"] == [True] * wrong + [False] * (len(steps) - wrong)
    assert stats.completions <= budget
    # Math-Shepherd would pay k completions for each of the 8 non-final steps of this one solution.
    assert stats.completions < k * (len(steps) - 1)
    # Only the estimated prefixes (and the graded final step) count as measured.
    assert 1 < sum(record["measured"]) <= 1 + 4


def test_omegaprm_skips_a_search_the_budget_cannot_pay_for(tmp_path):
    problem = _problems(1, ops=8, seed=1)[0]
    corrupted = arith.corrupt_step(problem.solution, 3, random.Random(0))
    k = 4
    worst_case = search_cost(len(split_steps(corrupted)), k)
    assert worst_case == 4 * k
    config = _config("omegaprm", k=k, rollout_budget=k + worst_case - 1)
    policy = OraclePolicy([problem], {problem.question: [corrupted, problem.solution]})
    stats = _label("omegaprm", policy, [problem], config, tmp_path / "o.jsonl")
    assert stats.completions == k  # the root estimate only
    assert [r["completions"] for r in _records(tmp_path / "o.jsonl")] == [split_steps(problem.solution)]


def test_math_shepherd_pays_k_completions_per_non_final_step(tmp_path):
    problems = _problems(2, ops=5)
    config = _config("math_shepherd", k=3, samples_per_problem=4)
    stats = _label("math_shepherd", OraclePolicy(problems), problems, config, tmp_path / "m.jsonl")
    steps_per_solution = 5 + 1
    assert stats.problems == 2 and stats.records == 2 and stats.steps == 2 * steps_per_solution
    assert stats.completions == 2 * (4 + 3 * (steps_per_solution - 1))
    assert stats.tokens > 0 and stats.steps_per_minute > 0
    assert stats.completions_per_step == stats.completions / stats.steps > 0
    assert stats.measured_steps == stats.steps


def test_prefixes_end_with_a_step_separator_after_the_chat_prompt(tmp_path):
    problem = _problems(1, ops=3)[0]
    policy = OraclePolicy([problem])
    _label("math_shepherd", policy, [problem], _config("math_shepherd"), tmp_path / "m.jsonl")
    prompt = f"{USER}{problem.question}{ASSISTANT}"
    steps = split_steps(problem.solution)
    expected = {prompt} | {prompt + STEP_SEPARATOR.join(steps[:i]) + STEP_SEPARATOR for i in range(1, len(steps))}
    assert set(policy.prefixes_seen) == expected


@pytest.mark.parametrize("method", sorted(METHODS))
def test_resume_skips_finished_problems_without_duplicates(tmp_path, method):
    problems = _problems(5, ops=4, seed=3)
    attempts = {p.question: [arith.corrupt_step(p.solution, 1, random.Random(0)), p.solution] for p in problems}
    out = tmp_path / "labels.jsonl"
    _label(method, OraclePolicy(problems, attempts), problems, _config(method), out)
    full = sorted(out.read_text().splitlines())

    # Interrupt: two problems finished, a third's records written but not marked, a torn line.
    order = list(dict.fromkeys(r["id"] for r in _records(out)))
    kept = [line for line in out.read_text().splitlines() if json.loads(line)["id"] in order[:3]]
    out.write_text("".join(line + "\n" for line in kept) + kept[-1][: len(kept[-1]) // 2])
    marks = done_path(out).read_text().splitlines()
    done_path(out).write_text("".join(m + "\n" for m in marks if json.loads(m)["id"] in order[:2]))

    stats = _label(method, OraclePolicy(problems, attempts), problems, _config(method), out)
    assert stats.problems == 3
    assert sorted(out.read_text().splitlines()) == full
    assert sorted(json.loads(m)["id"] for m in done_path(out).read_text().splitlines()) == sorted(order)

    again = _label(method, OraclePolicy(problems, attempts), problems, _config(method), out)
    assert again.problems == 0 and again.completions == 0
    assert sorted(out.read_text().splitlines()) == full


def test_label_problems_checks_method_and_config(tmp_path):
    problems = _problems(1, ops=2)
    with pytest.raises(ValueError, match="unknown method"):
        _label("prm800k", OraclePolicy(problems), problems, _config("omegaprm"), tmp_path / "x.jsonl")
    with pytest.raises(TypeError, match="OmegaPRMConfig"):
        _label("omegaprm", OraclePolicy(problems), problems, _config("math_shepherd"), tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="rollout_budget"):
        OmegaPRMConfig(k=8, rollout_budget=4)
    with pytest.raises(ValueError, match="label_type"):
        ShepherdConfig(label_type="fuzzy")


def test_labels_from_a_real_tiny_checkpoint_through_the_hf_engine(tmp_path):
    """The same driver on a real (untrained, one-step) checkpoint: wiring, not quality."""
    from openr.engine.hf_engine import HFEngine
    from openr.training.sft import SFTConfig, train_policy

    model_dir = tmp_path / "policy"
    train_policy(SFTConfig(hidden_size=64, num_heads=2, num_layers=1, intermediate_size=64, max_steps=1,
                           warmup_steps=1, num_train_problems=8), model_dir, progress=False)
    problems = _problems(1, ops=2)
    out = tmp_path / "labels.jsonl"

    async def run():
        engine = HFEngine(str(model_dir))
        await engine.start()
        try:
            config = ShepherdConfig(k=2, samples_per_problem=2, max_tokens=24, temperature=1.0)
            return await label_problems("math_shepherd", engine, problems, config, out, progress=False)
        finally:
            await engine.close()

    stats = asyncio.run(run())
    assert stats.problems == 1 and stats.completions >= 2 and stats.tokens > 0
    for record in _records(out):
        assert len(record["labels"]) == len(record["completions"]) == len(record["mc"])
    assert [json.loads(m)["id"] for m in done_path(out).read_text().splitlines()] == [problems[0].id]
