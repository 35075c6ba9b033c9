"""The PRMs people publish, each a tiny random checkpoint of its exact format:
`/v1/rewards` gives what the model card's formula gives, computed here
independently, and a wrong format or a missing tag token stops the server at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Model

from openr.prm import PRMFormatError, check_prm, load_prm
from openr.server.metrics import metric_in
from tests.support.app_client import serving
from tests.support.tiny_public import SYSTEM_PROMPT, causal_lm, lora_adapter, qwen_prm

QUESTION = "What is 12 + 30?"
# Candidates of one question sharing prefixes, so the prefix cache serves some steps.
CANDIDATES = [["Add the tens first", "12 + 30 = 42", "The answer is \\boxed{42}"],
              ["Add the tens first", "12 + 30 = 41"],
              ["Compute 7 * 6."]]
TOLERANCE = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("public-prms")
    base = causal_lm(root / "math-shepherd")
    return {"math-shepherd": base, "openr": lora_adapter(base, root / "openr"), "qwen-prm": qwen_prm(root / "qwen-prm")}


def tag_reference(model, tokenizer, tag: str, joiner: str, labels: str) -> list[list[float]]:
    """Math-Shepherd's and OpenR's reward code: f"{question} {solution}", each step
    ending in the tag; softmax over the (good, bad) logits at each tag; P(good)."""
    tag_id = tokenizer.encode(tag, add_special_tokens=False)[-1]
    good, bad = tokenizer.encode(labels, add_special_tokens=False)
    scores = []
    for steps in CANDIDATES:
        ids = torch.tensor([tokenizer.encode(f"{QUESTION} " + joiner.join(step + tag for step in steps))])
        with torch.no_grad():
            probs = model(ids).logits[0][:, [good, bad]].softmax(-1)[:, 0]
        scores.append(probs[ids[0] == tag_id].tolist())
    return scores


def qwen_reference(checkpoint) -> list[list[float]]:
    """Qwen2.5-Math-PRM's model card: the steps joined and ended by <extra_0> in the
    chat template after its system prompt; softmax of the `score` head; P(label 1)."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    body = Qwen2Model.from_pretrained(checkpoint)
    head = load_file(str(checkpoint / "model.safetensors"))
    tag_id = tokenizer.convert_tokens_to_ids("<extra_0>")
    scores = []
    for steps in CANDIDATES:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTION},
                    {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            hidden = body(ids).last_hidden_state[0]
        hidden = torch.relu(hidden @ head["score.0.weight"].T + head["score.0.bias"])
        logits = hidden @ head["score.2.weight"].T + head["score.2.bias"]
        scores.append(logits.softmax(-1)[:, 1][ids[0] == tag_id].tolist())
    return scores


def reference(name: str, checkpoints) -> list[list[float]]:
    if name == "qwen-prm":
        return qwen_reference(checkpoints[name])
    base = checkpoints["math-shepherd"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    if name == "math-shepherd":
        return tag_reference(model, tokenizer, " ки", "\n", "+ -")
    from peft import PeftModel  # OpenR's Math-psa: the adapter on its base, unmerged

    return tag_reference(PeftModel.from_pretrained(model, checkpoints["openr"]), tokenizer, " \n\n\n\n\n", "", " + -")


def assert_close(got: list[list[float]], expected: list[list[float]]) -> None:
    assert [len(row) for row in got] == [len(steps) for steps in CANDIDATES]
    for got_row, expected_row in zip(got, expected):
        assert got_row == pytest.approx(expected_row, abs=TOLERANCE)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["math-shepherd", "openr", "qwen-prm"])
async def test_rewards_endpoint_matches_the_model_cards_formula(checkpoints, name):
    prm_format = "math-shepherd" if name == "math-shepherd" else "auto"  # the other two are detected
    expected = reference(name, checkpoints)
    # A random head that scored every step alike would test nothing.
    assert len({round(s, 6) for row in expected for s in row}) > 3
    async with serving(prm_factory=lambda: load_prm(checkpoints[name], prm_format=prm_format)) as (http, _, _):
        # One call, then again step by step: the second is served partly from the prefix cache.
        first = await http.post("/v1/rewards", json={"question": QUESTION, "candidates": CANDIDATES})
        again = await http.post("/v1/rewards", json={"question": QUESTION, "candidates": CANDIDATES})
        metrics = (await http.get("/metrics")).text
    assert first.status_code == 200, first.text
    assert metric_in(metrics, "openr:prm_prefix_cache_hits_total") > 0
    assert_close(first.json()["scores"], expected)
    assert_close(again.json()["scores"], expected)


def test_auto_detects_the_adapter_and_the_architecture_and_refuses_to_guess(checkpoints, tmp_path):
    with pytest.raises(PRMFormatError, match="no such PRM checkpoint directory"):
        check_prm(tmp_path / "missing")
    assert check_prm(checkpoints["openr"]) == "openr"
    assert check_prm(checkpoints["qwen-prm"]) == "qwen-prm"
    with pytest.raises(PRMFormatError, match="math-shepherd.*openr.*qwen-prm"):
        check_prm(checkpoints["math-shepherd"])  # a plain causal LM: the format must be named


@pytest.mark.parametrize("name, wrong", [("math-shepherd", "qwen-prm"), ("qwen-prm", "math-shepherd"),
                                         ("openr", "ours"), ("qwen-prm", "openr")])
def test_a_wrong_format_is_refused(checkpoints, name, wrong):
    with pytest.raises(PRMFormatError, match=f"not in the {wrong} format"):
        check_prm(checkpoints[name], wrong)


def test_a_missing_tag_token_is_refused(tiny_bundle, tmp_path):
    policy = tiny_bundle[0] / "policy"  # a character-level tokenizer: no ` ки`, no ` \n\n\n\n\n` token
    for prm_format in ("math-shepherd", "openr"):
        with pytest.raises(PRMFormatError, match="step tag"):
            check_prm(policy, prm_format)
    with pytest.raises(PRMFormatError, match="<extra_0>"):
        check_prm(qwen_prm(tmp_path / "no-tag", step_tag=False))


def test_serve_stops_at_start_up_on_a_bad_prm(checkpoints):
    done = subprocess.run([sys.executable, "-m", "openr.cli", "serve", "--engine", "hf", "--model",
                           str(checkpoints["math-shepherd"]), "--prm", str(checkpoints["math-shepherd"])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "cannot tell the format" in done.stderr and "--prm-format" in done.stderr
    assert "Traceback" not in done.stderr
