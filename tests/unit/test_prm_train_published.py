"""`openr train prm --format math-shepherd` from any causal LM: the tag and label
tokens are added when missing, the loss falls, and the saved checkpoint is a plain
causal LM that the server's Math-Shepherd reader scores, at the tags, toward the
labels, as Math-Shepherd's model-card snippet reads it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, PRM_SUBDIR
from openr.prm import check_prm, load_prm
from openr.prm.formats import PRMFormatError, detect_format
from openr.training.labels.formats import math_shepherd_line
from openr.training.prm_published import math_shepherd_labels
from openr.training.prm_quality import main as prm_eval
from openr.training.prm_train import PRMTrainConfig, train_prm
from openr.training.sft import SFTConfig, build_model
from openr.training.tokenizer import build_tokenizer
from tests.support.tiny_public import causal_lm
from tests.unit.test_prm import RECORDS

pytestmark = pytest.mark.usefixtures("one_thread")


def arith_llama(out):
    """A causal LM whose character-level tokenizer has no ` ки` tag and no ` -` token."""
    tokenizer = build_tokenizer(256)
    build_model(SFTConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_len=256),
                tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def card_scores(checkpoint, question: str, steps: list[str]) -> list[float]:
    return card_reading(AutoModelForCausalLM.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint),
                        question, steps)


def card_reading(model, tokenizer, question: str, steps: list[str]) -> list[float]:
    """Math-Shepherd's model card: f"{question} {output}", steps ending in " ки",
    softmax over the logits of the tokens of "+ -" at each tag, P(+)."""
    good, bad = tokenizer.encode("+ -", add_special_tokens=False)
    tag_id = tokenizer.encode(" ки", add_special_tokens=False)[-1]
    ids = torch.tensor([tokenizer.encode(f"{question} " + "\n".join(step + " ки" for step in steps))])
    with torch.no_grad():
        probs = model(ids).logits[0][:, [good, bad]].softmax(-1)[:, 0]
    return probs[ids[0] == tag_id].tolist()


def write_half_each_format(tmp_path):
    """Two records in TRL's format and two as `openr train label --format math-shepherd` writes them."""
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:2]))
    shepherd = tmp_path / "shepherd.jsonl"
    lines = [math_shepherd_line({**r, "mc": [float(label) for label in r["labels"]]}, "arith") for r in RECORDS[2:]]
    shepherd.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return trl, shepherd


@pytest.mark.parametrize("base", [arith_llama, causal_lm], ids=["tokens-added", "tokens-present"])
def test_math_shepherd_prm_from_a_causal_lm_scores_its_labels_when_served(tmp_path, base):
    init = base(tmp_path / "base")
    vocab = len(AutoTokenizer.from_pretrained(init))
    config = PRMTrainConfig(format="math-shepherd", init_from=str(init), max_len=256, learning_rate=3e-3,
                            max_steps=60, batch_size=4, warmup_fraction=0.0, logging_steps=10)
    trl, shepherd = write_half_each_format(tmp_path)
    summary = train_prm(config, [trl, shepherd], tmp_path / "prm", eval_jsonl=trl, progress=False)
    assert summary["num_examples"] == len(RECORDS)
    assert summary["losses"][-1] < summary["losses"][0] / 5
    assert summary["eval_f1"] == 1.0

    out = tmp_path / "prm"
    saved = json.loads((out / "config.json").read_text())
    assert not any(key.startswith("prm_") for key in saved)  # a plain causal LM, as Math-Shepherd's is
    grown = len(AutoTokenizer.from_pretrained(out))
    assert grown > vocab if base is arith_llama else grown == vocab
    assert check_prm(out, "math-shepherd") == "math-shepherd"
    with pytest.raises(PRMFormatError):
        detect_format(out)  # nothing in it says "PRM": the format is named, as for Math-Shepherd's own

    prm = load_prm(out, prm_format="math-shepherd")
    scores = prm.score_batch([(r["prompt"], r["completions"]) for r in RECORDS])
    for record, row in zip(RECORDS, scores):
        assert [s > 0.5 for s in row] == record["labels"], (record["id"], row)
        assert row == pytest.approx(card_scores(out, record["prompt"], record["completions"]), abs=1e-5)


def test_math_shepherd_lines_give_back_their_step_labels():
    record = {**RECORDS[2], "mc": [1.0, 0.0, 0.0]}
    assert math_shepherd_labels(math_shepherd_line(record, "arith")) == [True, False, False]
    with pytest.raises(ValueError, match="spelt"):
        math_shepherd_labels({"input": "Q a ки\nb ки", "label": "Q a +\nb ?"})


def test_a_published_prm_started_from_our_verifier_drops_our_keys(tmp_path, capsys):
    """The bundled verifier carries prm_* keys; a math-shepherd PRM trained from it
    is a plain causal LM again, which the math-shepherd reader loads and auto does
    not take for ours; `openr train prm-eval --prm-format` measures it by name."""
    verifier = str(BUILTIN_BUNDLES[ARITH_ALIAS] / PRM_SUBDIR)
    assert detect_format(verifier) == "ours"
    out = tmp_path / "ms"
    train_prm(PRMTrainConfig(format="math-shepherd", init_from=verifier, max_steps=1, batch_size=2, max_len=256),
              [trl := write_half_each_format(tmp_path)[0]], out, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert not [key for key in config if key.startswith("prm_")]
    with pytest.raises(PRMFormatError, match="cannot tell"):
        detect_format(out)
    assert detect_format(out, "math-shepherd") == "math-shepherd"
    capsys.readouterr()  # what training printed
    prm_eval(["--prm", str(out), "--prm-format", "math-shepherd", "--records", str(trl)])
    assert json.loads(capsys.readouterr().out)["num_steps"] == sum(len(r["labels"]) for r in RECORDS[:2])
    with pytest.raises(SystemExit):  # auto cannot tell a plain causal LM's format: a usage error, not a traceback
        prm_eval(["--prm", str(out), "--records", str(trl)])
    assert "pass --prm-format" in capsys.readouterr().err


def test_published_formats_start_from_a_causal_lm():
    with pytest.raises(ValueError, match="init_from"):
        PRMTrainConfig(format="math-shepherd")
    with pytest.raises(ValueError, match="format"):
        PRMTrainConfig(format="mistral", init_from="x")


def test_qwen_prm_from_a_qwen2_causal_lm_is_detected_and_scores_its_labels(tmp_path):
    init = causal_lm(tmp_path / "base")
    config = PRMTrainConfig(format="qwen-prm", init_from=str(init), max_len=256, learning_rate=3e-3,
                            max_steps=60, batch_size=4, warmup_fraction=0.0, logging_steps=10)
    trl, _ = write_half_each_format(tmp_path)
    trl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    summary = train_prm(config, [trl], tmp_path / "prm", eval_jsonl=trl, progress=False)
    assert summary["losses"][-1] < summary["losses"][0] / 5 and summary["eval_f1"] == 1.0

    out = tmp_path / "prm"
    assert detect_format(out) == "qwen-prm" and check_prm(out) == "qwen-prm"
    scores = load_prm(out).score_batch([(r["prompt"], r["completions"]) for r in RECORDS])
    for record, row in zip(RECORDS, scores):
        assert [s > 0.5 for s in row] == record["labels"], (record["id"], row)
