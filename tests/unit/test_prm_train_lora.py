"""`openr train prm --lora`: a math-shepherd PRM trained as LoRA adapters on a
frozen causal LM is written as OpenR's Math-psa ships (an adapter naming its
base), only the adapters and the rows of the tokens the format added train,
the server's loader scores it as a plain peft + transformers reading does, and
`--prm-format auto` tells it from Math-psa's; `--init-from` takes the names
`openr serve --model` takes; qwen-prm trains LoRA on the Qwen2 body and is saved
merged; ours refuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from openr.engine.checkpoints import ARITH_ALIAS, split_bundle
from openr.prm import PRMFormatError, check_prm, load_prm
from openr.prm.formats import TRAIN_CONFIG, detect_format
from openr.training import prm_train
from openr.training.prm_train import PRMTrainConfig, train_prm
from tests.support.tiny_public import SPECIALS, byte_level_tokenizer, causal_lm, qwen_config
from tests.unit.test_prm import RECORDS
from tests.unit.test_prm_train_published import arith_llama, card_reading, write_half_each_format

pytestmark = pytest.mark.usefixtures("one_thread")
LORA = dict(format="math-shepherd", lora=True, lora_r=8, lora_alpha=16, lora_dropout=0.0, max_len=256,
            learning_rate=1e-2, max_steps=40, batch_size=4, warmup_fraction=0.0, logging_steps=10)
ADAPTER_PARAMS = ("lora_A", "lora_B", "trainable_tokens_delta")  # what --lora may train
TOLERANCE = 1e-5  # the server's merged model against peft's unmerged reading, both float32


def run_capturing(monkeypatch, config, train, out):
    """Train, keeping the model as it was saved and the card's reading of each
    training record by the adapted model before its first step."""
    seen = {}

    def with_lora(model, tokenizer, config):
        adapted = prm_train_with_lora(model, tokenizer, config)
        seen["trainable"] = [name for name, p in adapted.named_parameters() if p.requires_grad]
        if config.format == "math-shepherd":
            seen["before"] = [card_reading(adapted.eval(), tokenizer, r["prompt"], r["completions"])
                              for r in RECORDS]
        return adapted

    def save_prm(model, *args):
        seen["trained"] = model
        return prm_train_save_prm(model, *args)

    prm_train_with_lora, prm_train_save_prm = prm_train.with_lora, prm_train.save_prm
    monkeypatch.setattr(prm_train, "with_lora", with_lora)
    monkeypatch.setattr(prm_train, "save_prm", save_prm)
    return train_prm(config, train, out, progress=False), seen


def untied_arith_llama(out):
    """arith_llama with an output layer of its own: the added label tokens' rows train there too."""
    model = AutoModelForCausalLM.from_pretrained(arith_llama(out))
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=[arith_llama, untied_arith_llama, causal_lm],
                ids=["tokens-added", "tokens-added-untied", "tokens-present"])
def trained(request, tmp_path_factory):
    """(base dir, adapter dir, summary, what run_capturing saw), trained once per base."""
    root = tmp_path_factory.mktemp("lora")
    base = request.param(root / "base")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as monkeypatch:
        summary, seen = run_capturing(monkeypatch, PRMTrainConfig(init_from=str(base), **LORA),
                                      write_half_each_format(root), root / "prm")
    torch.set_num_threads(previous)
    return base, root / "prm", summary, seen


def test_lora_prm_is_an_adapter_naming_its_base_with_no_full_weights(trained):
    base, out, summary, _ = trained
    assert summary["losses"][-1] < summary["losses"][0] / 3
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["base_model_name_or_path"] == str(base)
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        names = list(f.keys())
    assert names and all(any(kind in name for kind in ADAPTER_PARAMS) for name in names), names
    assert check_prm(out, "math-shepherd") == "math-shepherd"  # named, as Math-Shepherd's own is


def test_lora_training_changes_only_the_adapters_and_the_added_token_rows(trained):
    base, out, _, seen = trained
    model, start = seen["trained"], AutoModelForCausalLM.from_pretrained(base).state_dict()
    vocab = len(AutoTokenizer.from_pretrained(base))
    added = list(range(vocab, len(AutoTokenizer.from_pretrained(out))))
    trainable = seen["trainable"]
    assert trainable and all(any(kind in name for kind in ADAPTER_PARAMS) for name in trainable), trainable
    assert any("lora_B" in name and p.abs().sum() > 0 for name, p in model.named_parameters())  # B starts at 0
    frozen = {name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".token_adapter", ""): p
              for name, p in model.named_parameters() if not p.requires_grad}
    assert set(frozen) == set(start) - ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    for name, weight in frozen.items():
        assert torch.equal(weight[:vocab], start[name][:vocab]), name
    tokens = [m for m in model.modules() if hasattr(m, "token_indices")]
    assert [sorted(m.token_indices["default"]) for m in tokens] == [added] * len(tokens)
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        rows = [name for name in f.keys() if "trainable_tokens" in name]
    # the added rows of the embeddings, and of the output layer unless it is the embeddings
    assert len(rows) == (0 if not added else 1 if model.config.tie_word_embeddings else 2), rows


def test_served_lora_prm_scores_as_peft_and_transformers_read_the_adapter(trained):
    base, out, _, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(base)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    reference = PeftModel.from_pretrained(model, out).eval()  # unmerged, as a user would read it
    inputs = [(r["prompt"], r["completions"]) for r in RECORDS] + [("Compute 9 - 4.", ["9 - 4 = 5", "So 5"])]
    served = load_prm(out, prm_format="math-shepherd").score_batch(inputs)
    for (question, steps), row in zip(inputs, served):
        assert row == pytest.approx(card_reading(reference, tokenizer, question, steps), abs=TOLERANCE)


def test_lora_training_moves_scores_toward_the_labels(trained):
    _, out, _, seen = trained
    served = load_prm(out, prm_format="math-shepherd").score_batch([(r["prompt"], r["completions"]) for r in RECORDS])
    for record, before, after in zip(RECORDS, seen["before"], served):
        labels = [float(label) for label in record["labels"]]
        error_before = sum(abs(y - s) for y, s in zip(labels, before))
        error_after = sum(abs(y - s) for y, s in zip(labels, after))
        assert error_after < error_before, (record["id"], before, after)
        assert [s > 0.5 for s in after] == record["labels"], (record["id"], after)


def test_auto_reads_a_trained_math_shepherd_adapter_as_math_shepherd(trained):
    _, out, _, _ = trained
    assert json.loads((out / TRAIN_CONFIG).read_text())["format"] == "math-shepherd"  # the marker read
    assert detect_format(out) == check_prm(out) == "math-shepherd"
    inputs = [(r["prompt"], r["completions"]) for r in RECORDS]
    assert load_prm(out).score_batch(inputs) == load_prm(out, prm_format="math-shepherd").score_batch(inputs)
    with pytest.raises(PRMFormatError, match="not in the openr format: it reads as math-shepherd"):
        check_prm(out, "openr")  # Math-psa's tag would read the wrong tokens


def test_init_from_takes_a_name_openr_serve_takes(tmp_path):
    trl, shepherd = write_half_each_format(tmp_path)
    prm_train.main(["--train", str(trl), str(shepherd), "--out", str(tmp_path / "prm"), "--init-from", ARITH_ALIAS,
                    "--format", "math-shepherd", "--lora", "--max-steps", "2", "--batch-size", "2",
                    "--max-len", "256"])
    adapter = json.loads((tmp_path / "prm" / "adapter_config.json").read_text())
    # the bundle's policy, as `openr serve --model openr-arith` runs it: a directory the server reaches
    assert adapter["base_model_name_or_path"] == str(Path(split_bundle(ARITH_ALIAS)[0]).resolve())
    [row] = load_prm(tmp_path / "prm").score_batch([(RECORDS[0]["prompt"], RECORDS[0]["completions"])])
    assert len(row) == 2 and all(0 < s < 1 for s in row)


def test_lora_is_refused_for_our_format_and_checked():
    with pytest.raises(ValueError, match="published formats"):
        PRMTrainConfig(lora=True)
    with pytest.raises(ValueError, match="lora_r"):
        PRMTrainConfig(format="math-shepherd", init_from="x", lora=True, lora_r=0)


def qwen_without_step_tag(out):
    """A tiny Qwen2 causal LM whose tokenizer lacks <extra_0>: qwen-prm adds it, and trains its row."""
    torch.manual_seed(0)
    tokenizer = byte_level_tokenizer(specials=tuple(SPECIALS[:3]))
    Qwen2ForCausalLM(qwen_config(tokenizer)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("make_base", [causal_lm, qwen_without_step_tag], ids=["tag-present", "tag-added"])
def test_qwen_prm_lora_is_saved_merged_whole_and_scores_its_labels(tmp_path, monkeypatch, make_base):
    base = make_base(tmp_path / "base")
    config = PRMTrainConfig(**{**LORA, "format": "qwen-prm", "max_steps": 30}, init_from=str(base))
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    summary, seen = run_capturing(monkeypatch, config, [trl], tmp_path / "prm")
    assert summary["losses"][-1] < summary["losses"][0] / 3
    body = [name for name in seen["trainable"] if not name.startswith("head.")]
    assert len(seen["trainable"]) - len(body) == 4  # the whole head: two Linear layers
    assert body and all(any(kind in name for kind in ADAPTER_PARAMS) for name in body), body
    assert any("trainable_tokens" in name for name in body) == (make_base is qwen_without_step_tag)
    out = tmp_path / "prm"
    assert not (out / "adapter_config.json").exists() and detect_format(out) == "qwen-prm"
    scores = load_prm(out).score_batch([(r["prompt"], r["completions"]) for r in RECORDS])
    for record, row in zip(RECORDS, scores):
        assert [s > 0.5 for s in row] == record["labels"], (record["id"], row)
