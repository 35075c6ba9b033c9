"""The PRMs people publish, in-process: Math-Shepherd, OpenR's Math-psa (a LoRA
adapter, loaded with peft) and Qwen2.5-Math-PRM.

Each adapter renders the search's steps the way its model was trained to read
them (openr.prm.formats), tokenizes the whole input as the model's own reward
code does, and reads one pair of logits at each step's tag: P(good) =
softmax(pair)[good] = sigmoid(l_good - l_bad). They share our scorers' prefix
cache and batching (openr.prm.causal_lm).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import cached_file

from openr.prm.formats import (
    ADAPTER_CONFIG,
    QWEN_PRM,
    QWEN_PRM_STEP_TAG,
    TAG_FORMATS,
    PRMFormatError,
    label_pair,
    one_token,
    qwen_prm_messages,
    read_json,
)
from openr.prm.prefix_cache import Encoded
from openr.prm.step_tag import TagScorer

PROBE = ("1 + 1 = ?", ["1 + 1 = 2", "The answer is 2"])  # a two-step input every tokenizer must tag twice


@dataclass(frozen=True)
class TagReader:
    """How one published format's input is built and read: `render(question,
    steps)` gives (the text before the solution, the whole input); the input is
    tokenized whole, as the models' reward code does, and read at each `tag_id`
    (the (good, bad) columns `pair`)."""

    tokenizer: PreTrainedTokenizerBase
    render: Callable[[str, list[str]], tuple[str, str]]
    tag_id: int
    pair: tuple[int, int]

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        head, text = self.render(question, list(steps))
        ids = self.tokenizer.encode(text)
        positions = [i for i, token in enumerate(ids) if token == self.tag_id]
        if len(positions) != len(steps):
            raise ValueError(f"the PRM input holds {len(positions)} step tags for {len(steps)} steps")
        prompt_len = common_prefix(ids, self.tokenizer.encode(head))
        return Encoded.build(ids, min([prompt_len, *positions]), [p + 1 for p in positions], [[p] for p in positions])


def common_prefix(ids: list[int], head: list[int]) -> int:
    """How many leading tokens `ids` shares with `head` (the cacheable prompt)."""
    n = 0
    for a, b in zip(ids, head):
        if a != b:
            break
        n += 1
    return n


def reader_for(tokenizer: PreTrainedTokenizerBase, prm_format: str, checkpoint) -> TagReader:
    """The checked reader of a published format: its tag and label tokens exist,
    and a plain two-step input holds exactly two tags (else `PRMFormatError`)."""
    if prm_format == QWEN_PRM:
        def render(question: str, steps: list[str]) -> tuple[str, str]:
            messages = qwen_prm_messages(question, steps)
            return (tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True),
                    tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))

        # (good, bad) = labels (1, 0) of the score head
        reader = TagReader(tokenizer, render, one_token(tokenizer, QWEN_PRM_STEP_TAG, "step tag", checkpoint), (1, 0))
    else:
        fmt = TAG_FORMATS[prm_format]
        tag_ids = tokenizer.encode(fmt.tag, add_special_tokens=False)
        if (not tag_ids or tag_ids[-1] == tokenizer.unk_token_id
                or fmt.tag.strip(" ") not in tokenizer.decode(tag_ids[-1:])):
            raise PRMFormatError(f"the tokenizer of PRM {checkpoint} has no token for the {fmt.name} step tag "
                                 f"{fmt.tag!r}; is this the right --prm-format?")
        reader = TagReader(tokenizer, fmt.render, tag_ids[-1], label_pair(tokenizer, fmt.labels, checkpoint))
    try:
        reader.encode(*PROBE)
    except ValueError as exc:
        raise PRMFormatError(f"PRM {checkpoint}: {exc} on a plain input; its tokenizer does not keep the step "
                             "tag whole. Is this the right --prm-format?") from exc
    return reader


def check_published(checkpoint: str | Path, prm_format: str) -> None:
    """The start-up check of a published PRM: its tokenizer and tag, before any weights load."""
    reader_for(load_tokenizer(checkpoint), prm_format, checkpoint)


class PublishedPRM(TagScorer):
    """A published PRM in-process: P(good) = sigmoid(l_good - l_bad) at each tag."""

    def __init__(self, model_dir: str | Path, prm_format: str, **kwargs):
        self.prm_format = prm_format
        super().__init__(model_dir, **kwargs)
        self.reader = reader_for(self.tokenizer, prm_format, model_dir)
        self.label_ids = torch.tensor(self.reader.pair)

    def load(self, model_dir, dtype):
        tokenizer = load_tokenizer(model_dir)
        if self.prm_format == QWEN_PRM:
            body = AutoModel.from_pretrained(str(model_dir), dtype=dtype)  # the Qwen2Model under `model.`
            return tokenizer, TokenClassifier(body, load_score_head(model_dir, dtype))
        if read_json(model_dir, ADAPTER_CONFIG) is not None:
            # peft applies the LoRA adapter (OpenR's Math-psa) onto its base model;
            # merged, it is a plain causal LM for the prefix cache and batching.
            from peft import AutoPeftModelForCausalLM

            return tokenizer, AutoPeftModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).merge_and_unload()
        return tokenizer, AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        return self.reader.encode(question, steps)



def load_tokenizer(checkpoint: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a checkpoint, or of the base model of an adapter that ships none."""
    adapter = read_json(checkpoint, ADAPTER_CONFIG)
    has_own = cached_file(str(checkpoint), "tokenizer_config.json", _raise_exceptions_for_missing_entries=False,
                          _raise_exceptions_for_connection_errors=False)
    source = checkpoint if adapter is None or has_own else adapter.get("base_model_name_or_path")
    if not source:
        raise PRMFormatError(f"adapter {checkpoint} has no tokenizer and names no base model")
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise PRMFormatError(f"cannot load the tokenizer of PRM {checkpoint} (from {source}): {exc}") from exc


class TokenClassifier(torch.nn.Module):
    """Qwen2ForProcessRewardModel: a Qwen2 body and a 2-label token head `score`
    (Linear, ReLU, Linear), built here because transformers has no native class
    for it and its hub code would need trust_remote_code. Called like a causal
    LM (`logits_to_keep`, `past_key_values`), so the prefix cache serves it."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Sequential):
        super().__init__()
        self.body, self.head = body, head

    config = property(lambda self: self.body.config)
    device = property(lambda self: self.body.device)
    dtype = property(lambda self: self.body.dtype)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                logits_to_keep: int | torch.Tensor = 0):
        out = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=past_key_values, use_cache=use_cache)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        return SimpleNamespace(logits=self.head(hidden), past_key_values=out.past_key_values)


def load_score_head(checkpoint: str | Path, dtype: torch.dtype) -> torch.nn.Sequential:
    """The `score.0` / `score.2` tensors of a Qwen2ForProcessRewardModel's safetensors."""
    index = cached_file(str(checkpoint), "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    files = (sorted(set(json.loads(Path(index).read_text())["weight_map"].values())) if index
             else ["model.safetensors"])
    tensors = {}
    for name in files:
        with safe_open(cached_file(str(checkpoint), name), framework="pt") as f:
            tensors.update({key: f.get_tensor(key) for key in f.keys() if key.startswith("score.")})
    try:
        first, last = tensors["score.0.weight"], tensors["score.2.weight"]
        head = torch.nn.Sequential(torch.nn.Linear(first.shape[1], first.shape[0]), torch.nn.ReLU(),
                                   torch.nn.Linear(last.shape[1], last.shape[0]))
        head.load_state_dict({key.removeprefix("score."): value for key, value in tensors.items()})
    except (KeyError, RuntimeError) as exc:
        raise PRMFormatError(f"PRM {checkpoint}: no Linear-ReLU-Linear `score` head in its safetensors "
                             f"({exc})") from exc
    return head.to(dtype)
