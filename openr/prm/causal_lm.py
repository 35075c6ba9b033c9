"""What every in-process PRM on a causal-LM checkpoint shares: how the policy's
text is encoded, loading, the length check, forward passes from the prefix
cache (openr.prm.prefix_cache), batches of similar rows, and the async
`StepScorer` contract.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from openr.contracts import ScorerInputTooLong
from openr.hardware import inference_dtype
from openr.prm.prefix_cache import CacheEntry, Encoded, PrefixCache, full_attention_only, spliced_past
from openr.tasks.problem import STEP_SEPARATOR

DEFAULT_FORWARD_BATCH_SIZE = 16  # sequences per forward pass
DEFAULT_CACHE_MB = 256  # key/value tensors kept by the prefix cache
PADDING_SLACK = 0.25  # padded work a forward pass may add over its rows' own
PIECE_MEMO = 4096  # prompts and step texts whose token ids are kept


def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # Step text is model output: never let it spell a control token (a stray
    # "<|step|>" would otherwise become an unlabelled tag).
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


class PieceIds:
    """Token ids of chat prompts and of step texts, memoised up to `memo` of each
    (0: none). A search sends its question and earlier steps again on every
    call, and tokenizing them was a quarter of the PRM's time."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, memo: int = 0):
        def prompt(question: str) -> tuple[int, ...]:
            return tuple(tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                       add_generation_prompt=True, tokenize=True, return_dict=False))

        self.prompt = functools.lru_cache(maxsize=memo)(prompt)
        self.text = functools.lru_cache(maxsize=memo)(lambda text: tuple(text_ids(tokenizer, text)))


def encode_solution(tokenizer: PreTrainedTokenizerBase, question: str, steps: Sequence[str],
                    after_step: Sequence[int] = (), pieces: PieceIds | None = None
                    ) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the chat prompt plus the steps as the policy writes them (joined
    by the step separator), with `after_step` ids (a tag) right after each step,
    and each step's token span [start, end). `pieces` may memoise the pieces.

    Pieces are encoded separately and concatenated, so spans are exact whatever
    the tokenizer; steps are stripped, as `split_steps` returns them.
    """
    pieces = pieces or PieceIds(tokenizer)
    ids = list(pieces.prompt(question))
    separator = pieces.text(STEP_SEPARATOR)
    spans = []
    for index, step in enumerate(steps):
        if index:
            ids += separator
        start = len(ids)
        ids += pieces.text(step.strip())
        spans.append((start, len(ids)))
        ids += after_step
    return ids, spans


class PRMInputTooLong(ScorerInputTooLong):
    """A candidate's PRM input does not fit the PRM's context: the caller's input
    is at fault (/v1/rewards answers 400; a search drops the candidate), not the PRM."""


class CausalLMScorer:
    """Loading, the length check, the prefix cache, length-sorted batches and the
    async `StepScorer` contract of an in-process PRM on a causal LM.

    Subclasses say how a (question, steps) pair is encoded (`encode`), what one
    position's logits give (`position_scalars`), how a step's scalars and the
    previous steps' values make the step's value (`fold`), and how values become
    scores (`score_batch`). `forwarded_tokens` counts the tokens run through the
    model, `queried_tokens` those of the inputs asked for (the difference was
    served from the prefix cache).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", forward_batch_size: int = DEFAULT_FORWARD_BATCH_SIZE,
                 cache_mb: float = DEFAULT_CACHE_MB):
        if forward_batch_size < 1:
            raise ValueError("forward_batch_size must be at least 1")
        if cache_mb < 0:
            raise ValueError("cache_mb must be >= 0 (0 switches the prefix cache off)")
        self.device = device
        self.forward_batch_size = forward_batch_size
        self.tokenizer, model = self.load(model_dir, inference_dtype(device))
        self.model = model.to(device).eval()
        self.max_len = self.model.config.max_position_embeddings
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else self.tokenizer.eos_token_id
        usable = full_attention_only(self.model.config)
        self.cache = PrefixCache(int(cache_mb * 2**20) if usable else 0)
        self.pieces = PieceIds(self.tokenizer, memo=PIECE_MEMO)
        self.queried_tokens = self.forwarded_tokens = 0

    # -- what a PRM kind defines ------------------------------------------------

    def load(self, model_dir: str | Path, dtype: torch.dtype) -> tuple[PreTrainedTokenizerBase, torch.nn.Module]:
        """The tokenizer, and a model called like a causal LM (`logits_to_keep`,
        `past_key_values`) whose `.logits` hold what `position_scalars` reads."""
        return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        raise NotImplementedError

    def position_scalars(self, logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """One number per read position, from its logits (rows) and the token after it."""
        raise NotImplementedError

    def fold(self, previous: list[float], scalars: torch.Tensor) -> float:
        """A step's value from the values of the steps before it and its scalars."""
        raise NotImplementedError

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """The `StepScorer` contract; the forward passes run in a worker thread."""
        return await asyncio.to_thread(self.score_batch, [(question, steps) for steps in candidates])

    def step_values(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Per pair, one value per step (before any score mapping), in input order."""
        rows = [self.encode(question, steps) for question, steps in pairs]
        for row in rows:
            if len(row.ids) > self.max_len:
                raise PRMInputTooLong(f"a candidate's PRM input is {len(row.ids)} tokens, over the PRM's "
                                      f"{self.max_len}-token context")
        self.queried_tokens += sum(len(row.ids) for row in rows if row.steps)
        with torch.inference_mode():
            return self._values(rows)

    def _values(self, rows: list[Encoded], prefixes: bool = False) -> list[list[float]]:
        """Step values of `rows`; with `prefixes`, the rows are shared prefixes to
        cache, and even one without steps (the prompt) is run."""
        if self.cache.enabled:
            self._share_prefixes(rows)
        values: list[list[float] | None] = [None] * len(rows)
        todo = []  # (row index, hit m, hit entry)

        def work(row: Encoded, m: int, entry: CacheEntry | None) -> tuple[int, int]:
            past = row.cuts[m] if entry else 0
            return past, len(row.ids) - past

        for index, row in enumerate(rows):
            m, entry = self.cache.longest(row)
            if not row.steps and not (prefixes and entry is None):
                values[index] = []
            elif m == row.steps:
                values[index] = list(entry.step_values)
            else:
                todo.append((index, m, entry))
        for batch in self._batches([(work(rows[i], m, e), (i, m, e)) for i, m, e in todo]):
            for (index, _, _), row_values in zip(batch, self._forward([(rows[i], m, e) for i, m, e in batch])):
                values[index] = row_values
        return values

    def _batches(self, items: list[tuple[tuple[int, int], object]]) -> list[list]:
        """Items (each with its (cached, new) token counts) cut into forward passes
        of at most `forward_batch_size`, sorted by cached length then new tokens, and
        cut early where padding to the pass's longest would add more than
        PADDING_SLACK of work: one pass per call's similar rows, not one pass of
        several calls' unlike ones (which made batching slower than not on a CPU)."""
        items = sorted(items, key=lambda item: item[0])
        batches, batch, past_max, width, useful = [], [], 0, 0, 0
        for (past, new), item in items:
            grown = (max(past_max, past), max(width, new), useful + past + new)
            if batch and (len(batch) == self.forward_batch_size
                          or (len(batch) + 1) * (grown[0] + grown[1]) > (1 + PADDING_SLACK) * grown[2]):
                batches.append(batch)
                batch, grown = [], (past, new, past + new)
            batch.append(item)
            past_max, width, useful = grown
        return batches + [batch] if batch else batches

    def _share_prefixes(self, rows: list[Encoded]) -> None:
        """Score first, once, every uncached step-boundary prefix that two or more
        rows share (the deepest one per row), so they all start from its cache
        entry: the candidates of one call share at least the prompt."""
        hits = [self.cache.longest(row)[0] for row in rows]
        counts = Counter(row.key(m) for row, hit in zip(rows, hits) for m in range(hit + 1, row.steps))
        shared: dict[tuple[int, ...], Encoded] = {}
        for row, hit in zip(rows, hits):
            deepest = next((m for m in range(row.steps - 1, hit, -1) if counts[row.key(m)] > 1), None)
            if deepest is not None:
                shared.setdefault(row.key(deepest), row.truncated(deepest))
        if shared:
            self._values(list(shared.values()), prefixes=True)

    def _forward(self, batch: list[tuple[Encoded, int, CacheEntry | None]]) -> list[list[float]]:
        """Run each row from its cached prefix to its end; store and return its step values."""
        past_lens = [row.cuts[m] if entry else 0 for row, m, entry in batch]
        past_max = max(past_lens)
        new = [row.ids[past:] for (row, _, _), past in zip(batch, past_lens)]
        width = max(len(ids) for ids in new)
        size = len(batch)
        input_ids = torch.full((size, width), self.pad_id)
        attention_mask = torch.zeros((size, past_max + width), dtype=torch.long)
        for b, (ids, past) in enumerate(zip(new, past_lens)):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention_mask[b, :past] = 1
            attention_mask[b, past_max : past_max + len(ids)] = 1
        position_ids = torch.tensor(past_lens)[:, None] + torch.arange(width)[None, :]
        first = [m if entry else 0 for _, m, entry in batch]  # first step each row computes
        # Only the columns some new step reads go through the LM head.
        columns = sorted({pos - past for (row, _, _), past, k0 in zip(batch, past_lens, first)
                          for reads in row.reads[k0:] for pos in reads})
        column_index = {column: i for i, column in enumerate(columns)}
        keep = torch.tensor(columns) if columns else 1  # a prompt alone reads nothing: one column, unused
        device = self.model.device
        spliced = (spliced_past([entry for _, _, entry in batch], past_max, width, self.model.config,
                                self.model.dtype, device) if self.cache.enabled else None)
        out = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                         position_ids=position_ids.to(device), past_key_values=spliced,
                         use_cache=self.cache.enabled, logits_to_keep=keep.to(device) if columns else keep)
        self.forwarded_tokens += sum(len(ids) for ids in new)
        logits = out.logits.float()
        results = []
        for b, ((row, m, entry), past, k0) in enumerate(zip(batch, past_lens, first)):
            values = list(entry.step_values) if entry else []
            for reads in row.reads[k0:]:
                picked = logits[b, [column_index[pos - past] for pos in reads]]
                next_ids = torch.tensor([row.ids[pos + 1] if pos + 1 < len(row.ids) else self.pad_id
                                         for pos in reads], device=picked.device)
                values.append(self.fold(values, self.position_scalars(picked, next_ids)))
            results.append(values)
            if self.cache.enabled:
                self.cache.store_row(row, entry, k0 if entry else -1, past, past_max, b, out.past_key_values, values)
        return results
