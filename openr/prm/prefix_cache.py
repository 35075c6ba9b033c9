"""The PRM's prefix cache: a search's PRM calls cost only their new steps.

Why. A step-level search scores a candidate, keeps it, and next round scores
it again with one more step; the children of one beam differ only
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

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, DynamicLayer


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
class CacheEntry:
    """The key/value tensors of positions [start, end) of a prefix (per layer,
    (heads, end - start, head_dim)), after those of `parent`; and the values of
    the steps the prefix holds."""

    key: tuple[int, ...]
    parent: CacheEntry | None
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

    def chain(self) -> list[CacheEntry]:
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
        self._entries: OrderedDict[tuple[int, ...], CacheEntry] = OrderedDict()
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

    def longest(self, row: Encoded) -> tuple[int, CacheEntry | None]:
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

    def store(self, entry: CacheEntry) -> None:
        with self._lock:
            old = self._entries.pop(entry.key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[entry.key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def store_row(self, row: Encoded, parent: CacheEntry | None, hit: int, past: int, past_max: int, b: int,
                  cache: Cache, values: list[float]) -> None:
        """Cache every step-boundary prefix of batch row `b` past its hit `hit`
        (-1: none): `cache` holds the row's `past` cached positions right-padded to
        `past_max`, then its new ones; `values` are its step values."""
        begin = past
        for m in range(hit + 1, row.steps + 1):
            end = row.cuts[m]
            span = slice(past_max + begin - past, past_max + end - past)
            entry = CacheEntry(row.key(m), parent, begin,
                               [layer.keys[b, :, span].clone() for layer in cache.layers],
                               [layer.values[b, :, span].clone() for layer in cache.layers], values[:m])
            self.store(entry)
            parent, begin = entry, end

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


class SplicedLayer(DynamicLayer):
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


def full_attention_only(config) -> bool:
    """Whether every layer attends to the whole context (no sliding window)."""
    layer_types = getattr(config, "layer_types", None) or []
    return all(kind == "full_attention" for kind in layer_types) and not getattr(config, "use_sliding_window", False)


def spliced_past(entries: Sequence[CacheEntry | None], past_max: int, width: int, config, dtype: torch.dtype,
                 device: torch.device) -> Cache:
    """A cache of `past_max + width` positions per row: each row's cached prefix
    (`entries[b]`, None: none) right-padded to `past_max`, then room the model
    writes the new positions into (no concatenation copy)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    shape = (len(entries), heads, past_max + width, dim)
    layers = []
    for layer in range(config.num_hidden_layers):
        keys = torch.zeros(shape, dtype=dtype, device=device)
        values = torch.zeros_like(keys)
        prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # rows of one parent share its prefix
        for b, entry in enumerate(entries):
            if entry is None or entry.end == 0:
                continue
            if id(entry) not in prefixes:
                chain = entry.chain()
                prefixes[id(entry)] = (torch.cat([part.keys[layer] for part in chain], dim=1),
                                       torch.cat([part.values[layer] for part in chain], dim=1))
            cached_keys, cached_values = prefixes[id(entry)]
            keys[b, :, : entry.end] = cached_keys
            values[b, :, : entry.end] = cached_values
        layers.append(SplicedLayer(keys, values, past_max))
    return Cache(layers=layers)
