"""What training a PRM into Math-Shepherd's published format needs beyond our own:
its tag and label tokens in any causal LM's tokenizer, and its training inputs.

The checkpoint stays a plain causal LM (no prm_* config keys) that
`openr serve --prm DIR --prm-format math-shepherd` reads as Math-Shepherd's own
PRM: the input is built and tokenized whole by the server's reader
(openr.prm.public.reader_for), so the position trained is the one scored.
Training files are TRL stepwise records or Math-Shepherd's `{"input", "label"}`
lines (what `openr train label --format math-shepherd` writes, and the shape of
the published peiyi9979/Math-Shepherd set). The qwen-prm format is a Qwen2
body with a fresh 2-label head (openr.prm.public.TokenClassifier), saved as the
hub ships Qwen2.5-Math-PRM; it trains on TRL records.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from openr.prm.formats import (
    MATH_SHEPHERD_FORMAT,
    QWEN_PRM,
    QWEN_PRM_ARCHITECTURE,
    QWEN_PRM_STEP_TAG,
    PRMFormatError,
    label_pair,
)
from openr.prm.public import TagReader, TokenClassifier, reader_for
from openr.training.prm_quality import check_step_record, jsonl_records

FORMAT = MATH_SHEPHERD_FORMAT


def add_math_shepherd_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> TagReader:
    """Add to `tokenizer` the ` ки` tag and the `+`/` -` label tokens it lacks
    (growing the embeddings only when the vocabulary outgrows them), and return
    the reader the server will build from the saved tokenizer."""
    good, bad = FORMAT.labels.split()
    try:
        label_pair(tokenizer, FORMAT.labels, "being trained")
    except PRMFormatError:
        # "+ -" must encode as exactly two tokens: "+" and " -" (Mistral's ▁-).
        tokenizer.add_tokens([AddedToken(good, normalized=False), AddedToken(f" {bad}", normalized=False)])
    try:
        reader_for(tokenizer, FORMAT.name, "being trained")
    except PRMFormatError:
        tokenizer.add_tokens([AddedToken(FORMAT.tag, normalized=False)])
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return reader_for(tokenizer, FORMAT.name, "being trained")


def math_shepherd_labels(record: dict) -> list[bool]:
    """The step labels of a Math-Shepherd line: `label` is `input` with each
    ` ки` tag spelt ` +` (good) or ` -` (bad)."""
    good, bad = FORMAT.labels.split()
    mark = FORMAT.tag.strip()
    marks = {FORMAT.tag.replace(mark, good): True, FORMAT.tag.replace(mark, bad): False}
    width = len(next(iter(marks)))
    text, label, at, labels = record["input"], record["label"], 0, []
    for piece in text.split(FORMAT.tag)[:-1]:
        spelt = label[at + len(piece): at + len(piece) + width]
        if label[at: at + len(piece)] != piece or spelt not in marks:
            raise ValueError(f"Math-Shepherd line: `label` is not `input` with each {FORMAT.tag!r} spelt as one "
                             f"of {sorted(marks)}")
        labels.append(marks[spelt])
        at += len(piece) + width
    return labels


def tagged_texts(reader: TagReader, paths: Sequence[str | Path]) -> Iterator[tuple[str, list]]:
    """(the PRM's input text, one label per step) of each record of the jsonl
    files, TRL stepwise (`prompt`, `completions`, `labels`) or Math-Shepherd
    (`input`, `label`) line by line."""
    for where, record in jsonl_records(paths):
        if "input" in record:
            if reader.render != FORMAT.render:
                raise ValueError(f"{where}: Math-Shepherd input/label lines train the {FORMAT.name} format only")
            yield record["input"], math_shepherd_labels(record)
        else:
            check_step_record(record, where)
            yield reader.render(record["prompt"], record["completions"])[1], record["labels"]


def tagged_examples(reader: TagReader, paths: Sequence[str | Path]) -> Iterator[tuple[list[int], list[int], list]]:
    """(input ids, tag positions, labels) of each record, tokenized whole as the
    server's reader does."""
    for text, labels in tagged_texts(reader, paths):
        ids = reader.tokenizer.encode(text)
        positions = [i for i, token in enumerate(ids) if token == reader.tag_id]
        if len(positions) != len(labels):
            raise ValueError(f"a training input holds {len(positions)} step tags for {len(labels)} labels: "
                             f"{text[:80]!r}...")
        yield ids, positions, labels


def qwen_prm_model(init_from: str, tokenizer: PreTrainedTokenizerBase) -> TokenClassifier:
    """Qwen2ForProcessRewardModel on the Qwen2 body of `init_from`: the `<extra_0>`
    tag added when missing, a fresh 2-label `score` head (Linear, ReLU, Linear)."""
    body = AutoModel.from_pretrained(init_from, dtype=torch.float32)
    if body.config.model_type != "qwen2":
        raise ValueError(f"{QWEN_PRM} needs a Qwen2 base; {init_from} is {body.config.model_type}")
    tokenizer.add_tokens([AddedToken(QWEN_PRM_STEP_TAG, normalized=False, special=True)], special_tokens=True)
    if len(tokenizer) > body.get_input_embeddings().num_embeddings:
        body.resize_token_embeddings(len(tokenizer))
    hidden = body.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    return TokenClassifier(body, head)


def save_qwen_prm(model: TokenClassifier, out: Path) -> None:
    """The checkpoint as the hub ships Qwen2.5-Math-PRM: the body under `model.`,
    the head under `score.`, one safetensors file, its architecture in config.json."""
    tensors = {f"model.{k}": v for k, v in model.body.state_dict().items()}
    tensors |= {f"score.{k}": v for k, v in model.head.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
    config = copy.deepcopy(model.body.config)
    config.architectures, config.num_labels = [QWEN_PRM_ARCHITECTURE], 2
    config.save_pretrained(out)
