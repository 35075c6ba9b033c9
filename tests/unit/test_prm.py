"""Step-tag PRM: training and scoring read the same position, the collator, metrics, arith labels."""

import asyncio
import json
import random

import pytest
import torch

from openr.prm import StepTagFormat, StepTagPRM, encode_steps, tag_margins
from openr.prm.step_tag import right_pad
from openr.tasks import Problem, arith
from openr.tasks.problem import STEP_SEPARATOR, split_steps
from openr.training.prm_quality import auroc, evaluate_prm, label_by_checking, processbench_f1
from openr.training.prm_train import (
    PRMTrainConfig,
    StepTagCollator,
    add_step_tag,
    encode_record,
    initial_model,
    train_prm,
)
from openr.training.sft import IGNORE_INDEX
from openr.training.tokenizer import build_tokenizer

# Mixed labels, including a wrong step after a right one, so a PRM that learnt
# the label one position off (the last step token instead of the tag) fails.
RECORDS = [
    {"prompt": "Compute 2 + 3.", "completions": ["2 + 3 = 5", "The answer is \\boxed{5}"],
     "labels": [True, True], "id": "a"},
    {"prompt": "Compute 4 * 2.", "completions": ["4 * 2 = 9", "The answer is \\boxed{9}"],
     "labels": [False, False], "id": "b"},
    {"prompt": "Compute (7 - 1) / 3.", "completions": ["7 - 1 = 6", "6 / 3 = 3", "The answer is \\boxed{3}"],
     "labels": [True, False, False], "id": "c"},
    {"prompt": "Compute (5 + 5) - 4.", "completions": ["5 + 5 = 10", "10 - 4 = 6", "The answer is \\boxed{6}"],
     "labels": [True, True, True], "id": "d"},
]
TINY = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_len=128)

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_trained_prm_scores_reproduce_training_labels(tmp_path):
    data = _write_jsonl(tmp_path / "train.jsonl", RECORDS)
    config = PRMTrainConfig(**TINY, learning_rate=3e-3, max_steps=100, batch_size=4, warmup_fraction=0.0,
                            logging_steps=20)
    summary = train_prm(config, [data], tmp_path / "prm", eval_jsonl=data, progress=False)
    assert summary["steps"] == 100 and summary["losses"][-1] < summary["losses"][0] / 10
    assert summary["eval_f1"] == 1.0 and summary["eval_step_auroc"] == 1.0

    saved = json.loads((tmp_path / "prm" / "config.json").read_text())
    assert (saved["prm_step_tag"], saved["prm_positive_token"], saved["prm_negative_token"]) == ("<|step|>", "+", "-")
    prm = StepTagPRM(tmp_path / "prm", forward_batch_size=3)  # two batches: order must be restored
    pairs = [(r["prompt"], r["completions"]) for r in RECORDS] + [("Compute 1 + 1.", [])]
    scores = prm.score_batch(pairs)
    assert scores[-1] == []
    for record, row in zip(RECORDS, scores):
        assert len(row) == len(record["labels"])
        assert [s > 0.5 for s in row] == record["labels"], (record["id"], row)
    async_scores = asyncio.run(prm.score(RECORDS[2]["prompt"], [RECORDS[2]["completions"]]))
    assert async_scores[0] == pytest.approx(scores[2], abs=1e-5)


def _tokenizer_with_tag():
    tokenizer = build_tokenizer(128)
    tokenizer.add_tokens(["<|step|>"], special_tokens=True)
    return tokenizer, StepTagFormat().tag_id(tokenizer)


def test_collator_labels_only_tag_positions_one_per_step():
    tokenizer, tag_id = _tokenizer_with_tag()
    examples = [encode_record(tokenizer, r, tag_id, "hard", 128) for r in RECORDS]
    batch = StepTagCollator(tokenizer.pad_token_id)(examples)
    labels, input_ids = batch["labels"], batch["input_ids"]
    assert torch.equal(labels != IGNORE_INDEX, input_ids == tag_id)
    for row, record in enumerate(RECORDS):
        assert labels[row][labels[row] != IGNORE_INDEX].tolist() == [float(y) for y in record["labels"]]
        assert batch["attention_mask"][row].sum() == len(examples[row]["input_ids"])


def test_step_text_cannot_forge_a_tag_and_steps_follow_the_separator():
    tokenizer, tag_id = _tokenizer_with_tag()
    ids, positions = encode_steps(tokenizer, "Q", ["1 + 1 = 2 <|step|>", "The answer is 2"], tag_id)
    assert [i for i, token in enumerate(ids) if token == tag_id] == positions
    assert tokenizer.decode(ids).endswith("1 + 1 = 2 <|step|><|step|>" + STEP_SEPARATOR + "The answer is 2<|step|>")


def test_tag_margins_are_the_tag_positions_own_logits_padded_or_not():
    model, tokenizer = initial_model(PRMTrainConfig(**TINY))
    tag_id = add_step_tag(model, tokenizer, StepTagFormat())
    label_ids = StepTagFormat().label_ids(tokenizer)
    rows = [encode_steps(tokenizer, r["prompt"], r["completions"], tag_id) for r in RECORDS]
    input_ids, attention_mask = right_pad([ids for ids, _ in rows], tokenizer.pad_token_id)
    with torch.no_grad():
        batched = tag_margins(model.eval(), input_ids, attention_mask, input_ids == tag_id, label_ids)
        expected = []
        for ids, positions in rows:  # unpadded, full logits, no shift
            logits = model(input_ids=torch.tensor([ids])).logits[0, positions]
            expected.append(logits[:, label_ids[0]] - logits[:, label_ids[1]])
    assert torch.allclose(batched, torch.cat(expected), atol=1e-5)


def test_soft_labels_are_kept_and_truncation_keeps_the_tags_that_fit():
    tokenizer, tag_id = _tokenizer_with_tag()
    record = {**RECORDS[2], "labels": [0.75, 0.25, 0.0]}
    assert encode_record(tokenizer, record, tag_id, "soft", 128)["tag_labels"] == [0.75, 0.25, 0.0]
    assert encode_record(tokenizer, record, tag_id, "hard", 128)["tag_labels"] == [1.0, 0.0, 0.0]
    full = encode_record(tokenizer, record, tag_id, "soft", 128)
    cut = encode_record(tokenizer, record, tag_id, "soft", full["tag_positions"][1])
    assert cut["tag_positions"] == full["tag_positions"][:1] and len(cut["input_ids"]) == full["tag_positions"][1]


def test_add_step_tag_grows_embeddings_only_when_needed():
    model, tokenizer = initial_model(PRMTrainConfig(**TINY))
    rows = model.get_input_embeddings().num_embeddings
    tag_id = add_step_tag(model, tokenizer, StepTagFormat())
    assert tag_id == rows and model.get_input_embeddings().num_embeddings == rows + 1
    assert add_step_tag(model, tokenizer, StepTagFormat()) == tag_id
    assert model.get_input_embeddings().num_embeddings == rows + 1


def test_processbench_f1_on_known_cases():
    scores = [[0.9, 0.8, 0.2], [0.9, 0.9], [0.3, 0.9], [0.9, 0.9], [0.9, 0.4]]
    labels = [[1, 1, 0], [1, 0], [0, 0], [1, 1], [True, True]]
    result = processbench_f1(scores, labels)
    # Erroneous: index 2 found, index 1 missed, index 0 found; correct: one right, one flagged.
    assert result["error_accuracy"] == pytest.approx(2 / 3)
    assert result["correct_accuracy"] == pytest.approx(1 / 2)
    assert result["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert (result["num_erroneous"], result["num_correct"]) == (3, 2)
    assert processbench_f1([[0.9]], [[1]])["f1"] is None


def test_auroc_matches_hand_computed_values():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5, 0.5], [True, False, False]) == pytest.approx(0.5)
    assert auroc([0.2, 0.9, 0.1], [False, True, False]) == 1.0
    assert auroc([0.9, 0.1], [False, True]) == 0.0
    assert auroc([0.3, 0.4], [True, True]) is None


def test_evaluate_prm_scores_each_question_once():
    class FakeScorer:
        def __init__(self):
            self.calls = []

        async def score(self, question, candidates):
            self.calls.append(question)
            return [[0.9 if "5" in step else 0.1 for step in steps] for steps in candidates]

    records = [{"prompt": "q1", "completions": ["5", "5"], "labels": [True, True]},
               {"prompt": "q2", "completions": ["5", "4"], "labels": [True, False]},
               {"prompt": "q1", "completions": ["4", "5"], "labels": [True, True]}]
    scorer = FakeScorer()
    result = evaluate_prm(scorer, records)
    assert sorted(scorer.calls) == ["q1", "q2"]
    assert (result["error_accuracy"], result["correct_accuracy"]) == (1.0, 0.5)
    assert result["num_steps"] == 6 and result["step_auroc"] == pytest.approx(0.9)  # one positive ties the negative


def _problem(solution):
    return Problem(id="p", question="Compute ((4 * 2) / 4) / 2.", answer="1", solution=solution,
                   source="arith", level=3)


GOLD = "4 * 2 = 8\n\n8 / 4 = 2\n\n2 / 2 = 1\n\nThe answer is \\boxed{1}"


@pytest.mark.parametrize("solution, expected", [
    (GOLD, [True, True, True, True]),
    ("4 * 2 = 8\n\n8 / 4 = 3\n\n3 / 3 = 1\n\nThe answer is \\boxed{1}", [True, False, False, False]),
    # Right arithmetic on a wrongly carried value, and a wrong operation.
    ("4 * 2 = 8\n\n9 / 3 = 3\n\n3 / 3 = 1\n\nThe answer is \\boxed{1}", [True, False, False, False]),
    ("4 * 2 = 8\n\n8 + 4 = 12\n\n12 / 2 = 6\n\nThe answer is \\boxed{6}", [True, False, False, False]),
    ("4 * 2 = 8\n\nThe answer is \\boxed{8}", [True, False]),  # answers before the last operation
    ("4 * 2 = 8\n\n8 / 4 = 2\n\n2 / 2 = 1\n\nThe answer is \\boxed{2}", [True, True, True, False]),
    ("4*2=8\n\n8 / 4 = 2", [True, True]),  # spacing does not matter; unfinished is not wrong
])
def test_label_by_checking_hand_made(solution, expected):
    assert label_by_checking(_problem(GOLD), solution) == expected


def test_label_by_checking_gold_and_corrupted_arith_solutions():
    rng = random.Random(0)
    for problem in arith.train_problems(20, seed=3):
        steps = split_steps(problem.solution)
        assert label_by_checking(problem, problem.solution) == [True] * len(steps)
        index = rng.randrange(len(steps) - 1)
        corrupted = arith.corrupt_step(problem.solution, index, rng)
        assert label_by_checking(problem, corrupted) == [True] * index + [False] * (len(steps) - index)
