"""Step-tag PRMs: a causal LM that reads a step's quality off a tag token placed after it.

The input is the question as a chat-templated user turn (with the generation
prompt, so the solution sits where the policy wrote it), then the steps joined
by the policy's blank-line separator, each followed by the tag:
`<chat prompt>step 1<|step|>\\n\\nstep 2<|step|>`. Between tags the text is
exactly what the policy generates, so a PRM started from the policy sees
familiar text; the tag comes right after each step, so its score depends on
that step and what precedes it only. p(step good) = softmax over the logits of
the positive and negative tokens at the tag's own position = sigmoid(l+ - l-).

`encode_solution` is the one place that builds this input, for training
(`encode_steps`, openr.training.prm_train) and for `StepTagPRM`. Training reads
the tag logits with `tag_margins`; the scorer reads the same position through
its prefix cache (openr.prm.causal_lm), so the position trained is the position
scored (tests compare the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from openr.prm.causal_lm import DEFAULT_CACHE_MB, DEFAULT_FORWARD_BATCH_SIZE, CausalLMScorer, encode_solution
from openr.prm.prefix_cache import Encoded

STEP_TAG = "<|step|>"
POSITIVE_TOKEN = "+"
NEGATIVE_TOKEN = "-"


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


class TagScorer(CausalLMScorer):
    """A PRM that reads a pair of logits (`label_ids`: good, bad) at each step's
    tag: P(good) = softmax(pair)[good] = sigmoid(l_good - l_bad). Ours and the
    published step-tag PRMs (openr.prm.public) differ only in their input."""

    label_ids: torch.Tensor

    def position_scalars(self, logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """l+ - l- at the tag (what `tag_margins` reads in training)."""
        pair = logits[:, self.label_ids.to(logits.device)]
        return pair[:, 0] - pair[:, 1]

    def fold(self, previous: list[float], scalars: torch.Tensor) -> float:
        return scalars[0].item()

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """One score in [0, 1] per step for each (question, steps) pair, in input order."""
        return [torch.sigmoid(torch.tensor(margins, dtype=torch.float64)).tolist()
                for margins in self.step_values(pairs)]


class StepTagPRM(TagScorer):
    """A `StepScorer` backed by a step-tag PRM checkpoint (transformers, in-process)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", forward_batch_size: int = DEFAULT_FORWARD_BATCH_SIZE,
                 cache_mb: float = DEFAULT_CACHE_MB):
        super().__init__(model_dir, device, forward_batch_size, cache_mb)
        self.format = StepTagFormat.from_config(self.model.config)
        self.tag_id = self.format.tag_id(self.tokenizer)
        self.label_ids = self.format.label_ids(self.tokenizer)

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        """`encode_steps`' input; step k reads the logits at its own tag."""
        ids, spans = encode_solution(self.tokenizer, question, steps, [self.tag_id], self.pieces)
        prompt_len = spans[0][0] if spans else len(ids)
        return Encoded.build(ids, prompt_len, [end + 1 for _, end in spans], [[end] for _, end in spans])
