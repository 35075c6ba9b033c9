"""What every in-process PRM on a causal-LM checkpoint shares, and the prefix
cache that makes a search's PRM calls cost only their new steps.

Why a prefix cache. A step-level search scores a candidate, keeps it, and next
round scores it again with one more step; the children of one beam differ only
in that step, and every candidate of a problem starts with the same prompt.
A causal LM's keys and values for a prefix do not depend on what follows it,
and neither does any step value read inside that prefix (a step-tag PRM's tag
logits, a likelihood verifier's token log-probabilities). So the scorer keeps
the key/value tensors and step values of what it has scored, keyed by token
prefixes that end at step boundaries, and runs the model only over the tokens
after the longest cached prefix. On openr-arith's beam search that is about a
dozen new tokens per candidate instead of about 400. The PRM's answers are the
same up to float rounding (tests compare them with full forward passes).

The cache is a chain of segments: the entry of a prefix holds only the
positions past its parent's, so 16 children of one beam store the beam once.
It is bounded in bytes of key/value tensors (least recently used out first)
and can be switched off (`cache_mb=0`), which leaves plain full forward passes.
It is used only for decoder-only models whose layers all attend to the full
context (a sliding window's cache cannot be padded and spliced this way).

vLLM's automatic prefix caching does this for the policy; it cannot serve
these PRMs (a likelihood verifier needs prompt log-probabilities, which vLLM
computes without its prefix cache, and a step-tag PRM reads logits at many
positions of the prompt), hence this small one written for the PRM.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from openr.search.protocols import ScorerInputTooLong
from openr.tasks.problem import STEP_SEPARATOR

DEFAULT_MAX_BATCH_SIZE = 16  # sequences per forward pass
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


@dataclass(frozen=True)
class Encoded:
    """One (question, steps) input as the PRM reads it.

    `reads[k]` are the positions whose logits step k's value is read from, and
    `cuts[m]` (m = 0..len(steps)) the length of the prefix that holds everything
    steps 0..m-1 need and nothing steps m.. need: a cached prefix of `cuts[m]`
    tokens gives the values of the first m steps, and a forward pass from there
    gives the rest. `cuts[-1]` is the whole input.
    """

    ids: list[int]
    reads: list[list[int]]
    cuts: list[int]

    @classmethod
    def build(cls, ids: list[int], prompt_len: int, regions: Sequence[int], reads: list[list[int]]) -> Encoded:
        """`regions[k]`: where step k's text (and any tag) ends. A cut sits at the end
        of the previous step's region, or earlier if a later step reads before it."""
        cuts, later = [], len(ids)
        for m in range(len(reads), -1, -1):  # right to left: `later` = first read of steps m..
            end = prompt_len if m == 0 else regions[m - 1]
            cuts.append(len(ids) if m == len(reads) else min(end, later))
            if m > 0 and reads[m - 1]:
                later = min(later, min(reads[m - 1]))
        cuts.reverse()
        return cls(ids, reads, cuts)

    @property
    def steps(self) -> int:
        return len(self.reads)

    def truncated(self, m: int) -> Encoded:
        """The input of the first m steps only, as far as `cuts[m]`."""
        return Encoded(self.ids[: self.cuts[m]], self.reads[:m], self.cuts[:m] + [self.cuts[m]])

    def key(self, m: int) -> tuple[int, ...]:
        return tuple(self.ids[: self.cuts[m]])


@dataclass(eq=False)
class _Entry:
    """The key/value tensors of positions [start, end) of a prefix (per layer,
    (heads, end - start, head_dim)), after those of `parent`; and the values of
    the steps the prefix holds."""

    key: tuple[int, ...]
    parent: _Entry | None
    start: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    step_values: list[float]
    nbytes: int = field(init=False)

    def __post_init__(self):
        self.nbytes = sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    @property
    def end(self) -> int:
        return self.start + (self.keys[0].shape[1] if self.keys else 0)

    def chain(self) -> list[_Entry]:
        """This entry and its ancestors, root first."""
        entries, entry = [], self
        while entry is not None:
            entries.append(entry)
            entry = entry.parent
        return entries[::-1]


class PrefixCache:
    """LRU of scored prefixes (thread-safe), at most `max_bytes` of key/value
    tensors counted per entry. An evicted entry still referenced by a kept
    child stays in memory until that child goes too."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, row: Encoded) -> tuple[int, _Entry | None]:
        """(m, entry) for the longest cached prefix `row.key(m)`, or (-1, None)."""
        if not self.enabled:
            return -1, None
        with self._lock:
            for m in range(row.steps, -1, -1):
                entry = self._entries.get(row.key(m))
                if entry is not None:
                    for kept in entry.chain():  # the whole chain was just used
                        if kept.key in self._entries:
                            self._entries.move_to_end(kept.key)
                    return m, entry
        return -1, None

    def contains(self, key: tuple[int, ...]) -> bool:
        with self._lock:
            return key in self._entries

    def store(self, entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(entry.key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[entry.key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


class _SplicedLayer(DynamicLayer):
    """One layer's cache, preallocated for the cached prefixes (right-padded to
    `past`) and the new positions after them; the model's `update` writes the
    new keys and values in place."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, past: int):
        super().__init__()
        self.keys, self.values, self.past = keys, values, past
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def get_seq_length(self) -> int:
        return self.past

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.past + key_states.shape[-2]
        self.keys[:, :, self.past : end] = key_states
        self.values[:, :, self.past : end] = value_states
        return self.keys[:, :, :end], self.values[:, :, :end]


def _full_attention_only(config) -> bool:
    layer_types = getattr(config, "layer_types", None) or []
    return all(kind == "full_attention" for kind in layer_types) and not getattr(config, "use_sliding_window", False)


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

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 cache_mb: float = DEFAULT_CACHE_MB):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if cache_mb < 0:
            raise ValueError("cache_mb must be >= 0 (0 switches the prefix cache off)")
        self.device = device
        self.max_batch_size = max_batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype = torch.float32 if device == "cpu" else torch.float16
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        self.max_len = self.model.config.max_position_embeddings
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else self.tokenizer.eos_token_id
        usable = _full_attention_only(self.model.config)
        self.cache = PrefixCache(int(cache_mb * 2**20) if usable else 0)
        self.pieces = PieceIds(self.tokenizer, memo=PIECE_MEMO)
        self.queried_tokens = self.forwarded_tokens = 0

    # -- what a PRM kind defines ------------------------------------------------

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

        def work(row: Encoded, m: int, entry: _Entry | None) -> tuple[int, int]:
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
        of at most `max_batch_size`, sorted by cached length then new tokens, and
        cut early where padding to the pass's longest would add more than
        PADDING_SLACK of work: one pass per call's similar rows, not one pass of
        several calls' unlike ones (which made batching slower than not on a CPU)."""
        items = sorted(items, key=lambda item: item[0])
        batches, batch, past_max, width, useful = [], [], 0, 0, 0
        for (past, new), item in items:
            grown = (max(past_max, past), max(width, new), useful + past + new)
            if batch and (len(batch) == self.max_batch_size
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

    def _forward(self, batch: list[tuple[Encoded, int, _Entry | None]]) -> list[list[float]]:
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
        out = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                         position_ids=position_ids.to(device), past_key_values=self._past(batch, past_max, width),
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
                self._store(row, entry, k0 if entry else -1, past, past_max, b, out.past_key_values, values)
        return results

    def _past(self, batch: list[tuple[Encoded, int, _Entry | None]], past_max: int, width: int) -> Cache | None:
        """A cache of `past_max + width` positions per row: each row's cached prefix
        right-padded to `past_max`, then room the model writes the new positions
        into (no concatenation copy). None when nothing is cached or kept."""
        if not self.cache.enabled:
            return None
        config = self.model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (len(batch), heads, past_max + width, dim)
        layers = []
        for layer in range(config.num_hidden_layers):
            keys = torch.zeros(shape, dtype=self.model.dtype, device=self.model.device)
            values = torch.zeros_like(keys)
            prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # rows of one parent share its prefix
            for b, (_, _, entry) in enumerate(batch):
                if entry is None or entry.end == 0:
                    continue
                if id(entry) not in prefixes:
                    chain = entry.chain()
                    prefixes[id(entry)] = (torch.cat([part.keys[layer] for part in chain], dim=1),
                                           torch.cat([part.values[layer] for part in chain], dim=1))
                cached_keys, cached_values = prefixes[id(entry)]
                keys[b, :, : entry.end] = cached_keys
                values[b, :, : entry.end] = cached_values
            layers.append(_SplicedLayer(keys, values, past_max))
        return Cache(layers=layers)

    def _store(self, row: Encoded, parent: _Entry | None, hit: int, past: int, past_max: int, b: int,
               cache: Cache, values: list[float]) -> None:
        """Cache every step-boundary prefix of `row` past its hit `hit` (-1: none)."""
        begin = past
        for m in range(hit + 1, row.steps + 1):
            end = row.cuts[m]
            span = slice(past_max + begin - past, past_max + end - past)
            entry = _Entry(row.key(m), parent, begin,
                           [layer.keys[b, :, span].clone() for layer in cache.layers],
                           [layer.values[b, :, span].clone() for layer in cache.layers], values[:m])
            self.cache.store(entry)
            parent, begin = entry, end
