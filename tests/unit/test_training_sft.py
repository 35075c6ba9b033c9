"""Policy SFT on CPU: the arith tokenizer, its chat template, a tiny training run
whose loss falls, a checkpoint that transformers reloads and generates from, and
greedy accuracy measured on the committed policy."""

from __future__ import annotations

import dataclasses
import json
import string
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from openr.engine.checkpoints import ARITH_ALIAS, split_bundle
from openr.tasks.arith import test_split, train_problems
from openr.training.policy_accuracy import greedy_accuracy, greedy_grades
from openr.training.sft import (
    CONFIG_FILENAME,
    SFTConfig,
    build_model,
    collate,
    encode_examples,
    initial_model,
    train_policy,
    training_examples,
)
from openr.training.tokenizer import IM_END, build_tokenizer

GOLD = "12 + 7 = 19\n\n19 * 3 = 57\n\n57 - 5 = 52\n\nThe answer is \\boxed{52}"

# Small enough to train 30 steps in a few seconds, big enough to fit 16 problems.
TINY = SFTConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_len=768,
                 learning_rate=3e-3, warmup_steps=5, batch_size=8, max_steps=30,
                 num_train_problems=16, min_ops=2, max_ops=3, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy")
    summary = train_policy(TINY, out, progress=False)
    return out, summary


def mean_loss(model, config: SFTConfig) -> float:
    """Loss of `model` on all of `config`'s training problems at once."""
    tokenizer = build_tokenizer(config.max_len)
    examples, _ = training_examples(config, tokenizer)
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.inference_mode():
        return model(**batch).loss.item()


def test_tokenizer_round_trips_arith_text():
    tokenizer = build_tokenizer()
    for text in (GOLD, "\n\n", "\\boxed{52}", "Compute ((3 - 9) / 2) * 4.", string.printable.strip("\x0b\x0c")):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    # One token per character: every digit is its own token.
    assert len(tokenizer.encode("1234", add_special_tokens=False)) == 4
    # Characters outside the vocabulary become <|unk|> instead of vanishing.
    assert tokenizer.decode(tokenizer.encode("\u00e9", add_special_tokens=False)) == "<|unk|>"


def test_chat_template_renders_chatml_with_generation_prompt():
    tokenizer = build_tokenizer()
    messages = [{"role": "user", "content": "Compute 2 + 3."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nCompute 2 + 3.<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|pad|>"


def test_labels_cover_only_the_assistant_turn():
    tokenizer = build_tokenizer()
    problem = train_problems(1, seed=0)[0]
    ids, labels = encode_examples(tokenizer, [problem])[0]
    trained_ids = [i for i, label in zip(ids, labels) if label != -100]
    assert tokenizer.decode(trained_ids) == problem.solution + IM_END


def test_config_rejects_head_size_vllm_cannot_serve():
    with pytest.raises(ValueError, match="head size"):
        SFTConfig(hidden_size=96, num_heads=4)


def test_problems_longer_than_max_len_are_left_out(tmp_path):
    short = dataclasses.replace(TINY, max_len=100, max_steps=2)
    summary = train_policy(short, tmp_path, progress=False)
    assert summary["skipped_too_long"] > 0
    assert summary["train_examples"] + summary["skipped_too_long"] == short.num_train_problems
    with pytest.raises(ValueError, match="fits"):
        train_policy(dataclasses.replace(TINY, max_len=20), tmp_path, progress=False)


def test_training_loss_falls(trained):
    out, summary = trained
    assert summary["steps"] == TINY.max_steps
    torch.manual_seed(TINY.seed)
    initial = mean_loss(build_model(TINY, build_tokenizer(TINY.max_len)).eval(), TINY)
    final = mean_loss(AutoModelForCausalLM.from_pretrained(out).eval(), TINY)
    assert final < 0.6 * initial


def test_init_from_continues_the_checkpoint(trained, tmp_path):
    out, _ = trained
    more = dataclasses.replace(TINY, init_from=str(out), max_steps=10, seed=1)
    tokenizer = build_tokenizer(TINY.max_len)
    start = initial_model(more, tokenizer).eval()
    saved = AutoModelForCausalLM.from_pretrained(out).eval()
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), saved.state_dict().values()))
    summary = train_policy(more, tmp_path / "more", progress=False)
    assert summary["init_from"] == str(out) and summary["steps"] == 10
    continued = AutoModelForCausalLM.from_pretrained(tmp_path / "more").eval()
    assert not torch.equal(continued.model.layers[0].mlp.up_proj.weight, saved.model.layers[0].mlp.up_proj.weight)
    assert mean_loss(continued, TINY) < 1.5 * mean_loss(saved, TINY)  # went on from it, not from scratch


def test_init_from_rejects_another_vocabulary(tmp_path):
    other = build_model(TINY, build_tokenizer(TINY.max_len))
    other.resize_token_embeddings(other.config.vocab_size + 8)
    other.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vocabulary"):
        initial_model(dataclasses.replace(TINY, init_from=str(tmp_path)), build_tokenizer(TINY.max_len))


def test_checkpoint_reloads_and_generates(trained):
    out, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)
    assert json.loads((out / CONFIG_FILENAME).read_text())["hidden_size"] == TINY.hidden_size
    messages = [{"role": "user", "content": "Compute (2 + 3) * 4."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    width = prompt["input_ids"].shape[1]
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)[0]
    with torch.inference_mode():
        first = model(**prompt).logits[0, -1].argmax().item()
    new = generated[width:].tolist()
    # Greedy from the reloaded weights: the first new token is the model's own argmax,
    # and generation ends at the checkpoint's eos or at the token cap.
    assert new and new[0] == first
    assert len(new) == 8 or new[-1] == model.generation_config.eos_token_id
    assert tokenizer.decode(generated[:width]) == tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                                                tokenize=False)


def test_greedy_accuracy_of_the_shipped_policy_beats_guessing_and_ignores_batching():
    """The committed openr-arith policy (38.6% on the whole test split) against the
    best constant guess on the same problems; left-padded batches grade as one at a time."""
    policy, _ = split_bundle(ARITH_ALIAS)
    problems = test_split()[:24]
    accuracy = greedy_accuracy(policy, problems, decode_batch_size=8, progress=False)
    guessing = max(Counter(p.answer for p in problems).values()) / len(problems)
    assert accuracy >= max(0.25, 3 * guessing)
    assert greedy_grades(policy, problems[:8], decode_batch_size=8, progress=False) == greedy_grades(
        policy, problems[:8], decode_batch_size=1, progress=False)


@pytest.mark.parametrize("stage, flag", [("sft", "--hidden-size"), ("prm", "--init-from"), ("label", "--completer"),
                                         ("verifier", "--labels")])
def test_stage_commands_forward_their_flags(capsys, stage, flag):
    """`openr train STAGE --help` prints the stage's own flags (argparse would
    otherwise keep leading options from reaching the stage's parser)."""
    from openr.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", stage, "--help"])
    assert exit_info.value.code == 0 and flag in capsys.readouterr().out


def test_unknown_flags_of_other_commands_are_still_errors():
    from openr.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--out", "x", "--no-such-flag"])
    assert exit_info.value.code == 2


def test_given_problems_are_what_is_trained(tmp_path):
    """`train_policy(problems=...)` trains those solutions (expert iteration's own
    samples in bench.rl_rft_control), not the config's arith draw."""
    tokenizer = build_tokenizer(TINY.max_len)
    own = [dataclasses.replace(p, solution="1 + 1 = 2\n\nThe answer is \\boxed{2}")
           for p in train_problems(3, seed=5)]
    examples, skipped = training_examples(TINY, tokenizer, own)
    assert (len(examples), skipped) == (3, 0)
    assert examples == encode_examples(tokenizer, own)
    summary = train_policy(dataclasses.replace(TINY, max_steps=2), tmp_path, progress=False, problems=own)
    assert summary["train_examples"] == 3
