"""The hf engine's running decode batch: KV-cached rows that new requests join
at a step boundary and finished ones leave.

transformers' `generate` runs a fixed batch to its end, so a request that
arrives one token after a batch started would wait for the whole batch (a
search's next step, behind another search's longest sample). Here a newcomer
is prefilled on its own, then its cache is merged into the running one: both
are left-padded to one length (the attention mask hides the padding; every row
keeps its own position ids, so padding never shifts a position) and
concatenated along the batch. Rows that finished are dropped from time to
time, and with them any leading columns that only padding still fills, so a
batch that lives on through many arrivals does not grow without end.

vLLM does this (and more) by itself; this is the small part the transformers
backend needs, written by hand because transformers has no API for it.
"""

from __future__ import annotations

import torch


class DecodeBatch:
    """Rows decoding together: the next input ids, the attention mask, the
    position ids and the KV cache, all in row order."""

    def __init__(self, model, rows: list, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor):
        self.model, self.rows = model, rows
        self.ids, self.mask, self.positions = ids, mask, positions
        self.cache = None

    @classmethod
    def prefill(cls, model, rows: list, pad_id: int, device) -> tuple["DecodeBatch", torch.Tensor]:
        """A batch of `rows` (each with `prompt_ids`), left-padded, after its
        prompts' forward pass; returns it and the logits of each row's next token.
        Rows with the same prompt (the n samples of a request, a search's
        samples of one prefix) share one prefill: its cache is copied to each."""
        slot: dict[tuple[int, ...], int] = {}
        for r in rows:
            slot.setdefault(tuple(r.prompt_ids), len(slot))
        prompts = list(slot)
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        batch = cls(model, rows, ids, mask, (mask.cumsum(-1) - 1).clamp(min=0))
        logits = batch.forward()
        if len(prompts) < len(rows):
            index = torch.tensor([slot[tuple(r.prompt_ids)] for r in rows], device=device)
            batch.cache.batch_select_indices(index)
            batch.ids, batch.mask, batch.positions = batch.ids[index], batch.mask[index], batch.positions[index]
            logits = logits[index]
        return batch, logits

    @property
    def width(self) -> int:
        """Cached columns, padding included."""
        return self.mask.shape[1]

    def forward(self) -> torch.Tensor:
        """Run the pending ids; returns each row's next-token logits (float32)."""
        out = self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=self.positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        return out.logits[:, -1, :].float()

    def extend(self, chosen: torch.Tensor) -> None:
        """Feed each row's chosen token at the next step."""
        self.ids = chosen.unsqueeze(-1)
        self.mask = torch.cat([self.mask, torch.ones_like(self.ids)], dim=-1)
        self.positions = self.positions[:, -1:] + 1

    def keep(self, indices: list[int]) -> None:
        """Keep only rows `indices`, and drop leading columns that are padding in all of them."""
        index = torch.tensor(indices, device=self.ids.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[i] for i in indices]
        self.ids, self.mask, self.positions = self.ids[index], self.mask[index], self.positions[index]
        # the mask's last column is the pending token's (not cached yet): never cropped
        first = int(self.mask[:, :-1].any(0).int().argmax()) if self.mask[:, :-1].any() else 0
        if first:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def join(self, other: "DecodeBatch") -> None:
        """Append `other`'s rows (both batches extended, not yet forwarded)."""
        width = max(self.width, other.width)
        self.mask = torch.cat([_pad_left(self.mask, width, -1), _pad_left(other.mask, width, -1)])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            cached = width - 1  # the pending token is not in the cache yet
            mine.keys = torch.cat([_pad_left(mine.keys, cached, -2), _pad_left(theirs.keys, cached, -2)])
            mine.values = torch.cat([_pad_left(mine.values, cached, -2), _pad_left(theirs.values, cached, -2)])
        self.ids = torch.cat([self.ids, other.ids])
        self.positions = torch.cat([self.positions, other.positions])
        self.rows = self.rows + other.rows


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
