"""Step-tag PRMs: a causal LM that reads a step's quality off a tag token placed after it.

The input is the question as a chat-templated user turn (with the generation
prompt, so the solution sits where the policy wrote it), then the steps joined
by the policy's blank-line separator, each followed by the tag:
`<chat prompt>step 1<|step|>\\n\\nstep 2<|step|>`. Between tags the text is
exactly what the policy generates, so a PRM started from the policy sees
familiar text; the tag comes right after each step, so its score depends on
that step and what precedes it only. p(step good) = softmax over the logits of
the positive and negative tokens at the tag's own position = sigmoid(l+ - l-).

`encode_steps` and `tag_margins` are the one place that builds this input and
reads the tag logits: training (openr.training.prm_train) and `StepTagPRM` both
call them, so the position trained is the position scored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from openr.tasks.problem import STEP_SEPARATOR

STEP_TAG = "<|step|>"
POSITIVE_TOKEN = "+"
NEGATIVE_TOKEN = "-"
DEFAULT_MAX_BATCH_SIZE = 16  # sequences per forward pass


@dataclass(frozen=True)
class StepTagFormat:
    """The tag and label strings of a step-tag PRM, stored in its config.json as
    `prm_step_tag`, `prm_positive_token`, `prm_negative_token`."""

    step_tag: str = STEP_TAG
    positive: str = POSITIVE_TOKEN
    negative: str = NEGATIVE_TOKEN

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> StepTagFormat:
        fields = ("prm_step_tag", "prm_positive_token", "prm_negative_token")
        missing = [name for name in fields if getattr(config, name, None) is None]
        if missing:
            raise ValueError(f"not a step-tag PRM checkpoint: config.json lacks {', '.join(missing)}")
        return cls(*(getattr(config, name) for name in fields))

    def write_to(self, config: PretrainedConfig) -> None:
        config.prm_step_tag = self.step_tag
        config.prm_positive_token = self.positive
        config.prm_negative_token = self.negative

    def tag_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        """The tag's token id; it must be a single added token of the tokenizer."""
        ids = tokenizer.encode(self.step_tag, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"step tag {self.step_tag!r} is not one token of this tokenizer")
        return ids[0]

    def label_ids(self, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
        """Token ids of (positive, negative); each string must encode to exactly one token."""
        pair = []
        for text in (self.positive, self.negative):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"label token {text!r} encodes to {len(ids)} tokens, need 1")
            pair.append(ids[0])
        return torch.tensor(pair)


def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # Step text is model output: never let it spell a control token (a stray
    # "<|step|>" would otherwise become an unlabelled tag).
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_solution(tokenizer: PreTrainedTokenizerBase, question: str, steps: Sequence[str],
                    after_step: Sequence[int] = ()) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the chat prompt plus the steps as the policy writes them (joined
    by the step separator), with `after_step` ids (a tag) right after each step,
    and each step's token span [start, end).

    Pieces are encoded separately and concatenated, so spans are exact whatever
    the tokenizer; steps are stripped, as `split_steps` returns them.
    """
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    separator = text_ids(tokenizer, STEP_SEPARATOR)
    spans = []
    for index, step in enumerate(steps):
        if index:
            ids += separator
        start = len(ids)
        ids += text_ids(tokenizer, step.strip())
        spans.append((start, len(ids)))
        ids += after_step
    return ids, spans


def encode_steps(tokenizer: PreTrainedTokenizerBase, question: str, steps: Sequence[str],
                 tag_id: int) -> tuple[list[int], list[int]]:
    """Token ids of the step-tag PRM input for one solution, and the position of each step's tag."""
    ids, spans = encode_solution(tokenizer, question, steps, [tag_id])
    return ids, [end for _, end in spans]


def tag_margins(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                tag_mask: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """l+ - l- at every True entry of `tag_mask` (batch, seq), in row-major order.

    The logits are those of the tag token's own position (no shift): what the
    model emits after reading the tag. Only the columns holding a tag are sent
    through the LM head, which spares the full (batch, seq, vocab) logits.
    """
    columns = tag_mask.any(dim=0).nonzero().squeeze(1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=columns).logits
    pair = logits[tag_mask[:, columns]][:, label_ids.to(logits.device)]
    return (pair[:, 0] - pair[:, 1]).float()


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of right-padded rows; positions stay those of the unpadded rows."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row)
        attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


class PRMInputTooLong(ValueError):
    """A candidate's PRM input does not fit the PRM's context: the caller's input
    is at fault (the server answers 400), not the PRM."""


class CausalLMScorer:
    """What every in-process PRM on a causal-LM checkpoint shares: loading it, the
    length check, length-sorted batches, and the async `StepScorer` contract.
    Subclasses encode pairs and say what a forward pass over a batch returns."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.device = device
        self.max_batch_size = max_batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype = torch.float32 if device == "cpu" else torch.float16
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        self.max_len = self.model.config.max_position_embeddings
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else self.tokenizer.eos_token_id

    def in_batches(self, encoded: Sequence[tuple[list[int], list]],
                   forward: Callable[[list[tuple[list[int], list]]], list[list[float]]]) -> list[list[float]]:
        """`forward`'s per-step values for each encoded (ids, one entry per step) row,
        in input order. Rows are sorted by length and cut into batches of
        `max_batch_size`, so a batch holds similar lengths and little padding; a
        row without steps gets [] without a forward pass."""
        for ids, _ in encoded:
            if len(ids) > self.max_len:
                raise PRMInputTooLong(f"a candidate's PRM input is {len(ids)} tokens, over the PRM's "
                                      f"{self.max_len}-token context")
        values: list[list[float]] = [[] for _ in encoded]
        order = sorted((i for i, (_, steps) in enumerate(encoded) if steps), key=lambda i: len(encoded[i][0]))
        for start in range(0, len(order), self.max_batch_size):
            rows = order[start : start + self.max_batch_size]
            with torch.inference_mode():
                batch = forward([encoded[i] for i in rows])
            for row, row_values in zip(rows, batch):
                values[row] = row_values
        return values

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        raise NotImplementedError

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """The `StepScorer` contract; the forward pass runs in a worker thread."""
        return await asyncio.to_thread(self.score_batch, [(question, steps) for steps in candidates])


class StepTagPRM(CausalLMScorer):
    """A `StepScorer` backed by a step-tag PRM checkpoint (transformers, in-process)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        super().__init__(model_dir, device, max_batch_size)
        self.format = StepTagFormat.from_config(self.model.config)
        self.tag_id = self.format.tag_id(self.tokenizer)
        self.label_ids = self.format.label_ids(self.tokenizer)

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """One score in [0, 1] per step for each (question, steps) pair, in input order."""
        encoded = [encode_steps(self.tokenizer, question, steps, self.tag_id) for question, steps in pairs]
        return self.in_batches(encoded, self._forward)

    def _forward(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        input_ids, attention_mask = right_pad([ids for ids, _ in rows], self.pad_id)
        tag_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for index, (_, positions) in enumerate(rows):
            tag_mask[index, positions] = True
        margins = tag_margins(self.model, input_ids.to(self.device), attention_mask.to(self.device),
                              tag_mask.to(self.device), self.label_ids)
        flat = torch.sigmoid(margins).tolist()
        out, taken = [], 0
        for _, positions in rows:
            out.append(flat[taken : taken + len(positions)])
            taken += len(positions)
        return out
