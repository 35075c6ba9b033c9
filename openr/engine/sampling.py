"""Per-row token sampling for the transformers backend.

Each row of a batch carries its own temperature, top-p and seed. Log-probabilities
are those of the raw model distribution (as vLLM reports them), whatever the
sampling settings.
"""

from __future__ import annotations

import torch

from openr.engine.base import SamplingConfig

GREEDY_BELOW = 1e-5  # temperatures under this are treated as greedy decoding
SEED_SPACE = 2**63  # torch generators take signed 64-bit seeds; larger ones are folded into this range


def next_tokens(logits: torch.Tensor, params: list[SamplingConfig], steps: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one token per row; return (token ids, their raw log-probabilities)."""
    raw_logprobs = torch.log_softmax(logits, dim=-1)
    chosen = torch.empty(len(params), dtype=torch.long)
    for i, p in enumerate(params):
        if p.temperature < GREEDY_BELOW:
            chosen[i] = int(torch.argmax(logits[i]))
            continue
        probs = _top_p(torch.softmax(logits[i] / p.temperature, dim=-1), p.top_p)
        generator = None
        if p.seed is not None:  # reproducible per request, whatever else shares the batch
            generator = torch.Generator().manual_seed((p.seed * 1_000_003 + steps[i]) % SEED_SPACE)
        chosen[i] = int(torch.multinomial(probs.cpu(), 1, generator=generator))
    chosen = chosen.to(logits.device)
    return chosen, raw_logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).cpu()


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    # keep the smallest set of tokens whose mass reaches top_p (always at least one)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    sorted_probs[outside] = 0.0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum()
