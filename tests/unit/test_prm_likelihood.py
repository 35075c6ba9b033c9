"""Likelihood verifiers (openr.prm.likelihood): the calibration fit, the evidence
read off a real (tiny, recipe-trained) checkpoint, loading by kind, and the
shipped verifier's measured quality."""

import json
import math
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from openr.engine.checkpoints import ARITH_ALIAS, split_bundle
from openr.prm import LikelihoodPRM, StepTagPRM, load_prm
from openr.prm.causal_lm import encode_solution
from openr.prm.likelihood import Calibration, fit_calibration, make_verifier
from openr.tasks import arith
from openr.tasks.problem import STEP_SEPARATOR, split_steps
from openr.training.prm_quality import evaluate_prm, label_by_checking, policy_records


def test_calibration_recovers_a_logistic_relation():
    rng = random.Random(0)
    evidence = [rng.uniform(-8, 0) for _ in range(20_000)]
    labels = [rng.random() < 1 / (1 + math.exp(-(2 * x + 3))) for x in evidence]
    calibration = fit_calibration(evidence, labels)
    assert calibration.scale == pytest.approx(2, rel=0.1)
    assert calibration.bias == pytest.approx(3, rel=0.1)


def test_calibration_of_one_class_stays_finite_and_says_so():
    calibration = fit_calibration([-0.5, -2.0, -4.0], [False, False, False])
    probabilities = calibration.probability(torch.tensor([-0.5, -2.0, -4.0]))
    assert math.isfinite(calibration.scale) and math.isfinite(calibration.bias)
    assert (probabilities < 0.5).all()
    with pytest.raises(ValueError):
        fit_calibration([-1.0], [])


def _pairs(n: int = 3) -> list[tuple[str, list[str]]]:
    problems = arith.train_problems(n, seed=5)
    pairs = [(p.question, split_steps(p.solution)) for p in problems]
    return pairs + [(problems[0].question, pairs[0][1][:2]), (problems[1].question, [])]


def test_evidence_is_the_running_minimum_of_the_steps_token_log_probabilities(tiny_bundle):
    verifier = tiny_bundle[0] / "verifier"
    tokenizer = AutoTokenizer.from_pretrained(verifier)
    model = AutoModelForCausalLM.from_pretrained(verifier, dtype=torch.float32).eval()
    pairs = _pairs()
    # two rows per forward pass, sorted by length: padding and order must not matter
    evidence = LikelihoodPRM(verifier, forward_batch_size=2, calibration=Calibration()).evidence_batch(pairs)
    for (question, steps), row in zip(pairs, evidence):
        ids, spans = encode_solution(tokenizer, question, steps)
        # the verifier reads exactly the text the policy writes
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        assert tokenizer.decode(ids[len(prompt):]) == STEP_SEPARATOR.join(steps)
        assert [tokenizer.decode(ids[a:b]) for a, b in spans] == steps
        assert len(row) == len(steps)
        if not steps:
            continue
        with torch.no_grad():  # one solution alone, no padding
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
        lowest = [min(log_probs[t - 1, ids[t]].item() for t in range(a, b)) for a, b in spans]
        assert row == pytest.approx([min(lowest[: i + 1]) for i in range(len(lowest))], abs=1e-4)
        assert row == sorted(row, reverse=True)  # running minimum: never rises


def test_make_verifier_writes_a_checkpoint_that_load_prm_serves(tiny_bundle, tmp_path):
    out, _ = tiny_bundle
    rng = random.Random(0)
    records = []
    for problem in arith.train_problems(6, seed=2):
        wrong = arith.corrupt_step(problem.solution, rng.randrange(problem.level), rng)
        for text in (problem.solution, wrong):
            records.append({"prompt": problem.question, "completions": split_steps(text),
                            "labels": label_by_checking(problem, text)})
    summary = make_verifier(out / "verifier", records, tmp_path / "verifier")
    assert summary["steps"] == sum(len(r["labels"]) for r in records)
    assert 0 < summary["positive_steps"] < summary["steps"]
    config = json.loads((tmp_path / "verifier" / "config.json").read_text())
    assert (config["prm_kind"], config["prm_scale"], config["prm_bias"]) == \
        ("likelihood", summary["scale"], summary["bias"])

    prm = load_prm(tmp_path / "verifier", forward_batch_size=3)
    assert isinstance(prm, LikelihoodPRM)
    pairs = _pairs()
    evidence = LikelihoodPRM(out / "verifier", calibration=Calibration()).evidence_batch(pairs)
    calibration = Calibration(summary["scale"], summary["bias"])
    for row, values in zip(prm.score_batch(pairs), evidence):
        assert row == pytest.approx(calibration.probability(torch.tensor(values, dtype=torch.float64)).tolist())
        assert all(0 <= score <= 1 for score in row)
    assert isinstance(load_prm(out / "prm-step-tag"), StepTagPRM)
    assert isinstance(load_prm(out / "prm"), LikelihoodPRM)  # the recipe's served PRM


def test_verifier_command_calibrates_a_checkpoint(tiny_bundle, tmp_path, capsys):
    from openr.cli import main

    out, _ = tiny_bundle
    main(["train", "verifier", "--lm", str(out / "verifier"), "--labels", str(out / "labels" / "math_shepherd.jsonl"),
          "--out", str(tmp_path / "v")])
    printed = json.loads(capsys.readouterr().out)
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    assert (config["prm_kind"], config["prm_scale"], config["prm_bias"]) == \
        ("likelihood", printed["scale"], printed["bias"])
    assert isinstance(load_prm(tmp_path / "v"), LikelihoodPRM)


def test_the_shipped_verifier_finds_first_wrong_steps_of_fresh_policy_solutions():
    """What openr/prm/likelihood.py claims for the committed openr-arith verifier
    (F1 0.95, AUROC 1.00 on 600 solutions), held to a floor on 40 fresh ones."""
    policy, verifier = split_bundle(ARITH_ALIAS)
    records = policy_records(policy, arith.test_split()[:40], samples_per_problem=1, progress=False)
    quality = evaluate_prm(load_prm(verifier), records)
    assert quality["num_erroneous"] >= 10 and quality["num_correct"] >= 5  # both kinds, or F1 means little
    assert quality["f1"] >= 0.85 and quality["step_auroc"] >= 0.97
