"""Per-row token sampling for the transformers backend.

Each row of a batch carries its own temperature, top-p, seed, presence and
frequency penalties and logit bias. Log-probabilities (and the top
alternatives a row asks for) are those of the raw model distribution, before
penalties, bias and temperature, as vLLM reports them by default.
"""

from __future__ import annotations

import torch

from openr.engine.base import SamplingConfig

GREEDY_BELOW = 1e-5  # temperatures under this are treated as greedy decoding
SEED_SPACE = 2**63  # torch generators take signed 64-bit seeds; larger ones are folded into this range


def next_tokens(logits: torch.Tensor, params: list[SamplingConfig], outputs: list[list[int]]
                ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[list[int], list[float]] | None]]:
    """Choose one token per row, given the tokens each row has output so far;
    return (token ids, their raw log-probabilities, and for each row that asked
    for alternatives its top (ids, log-probabilities))."""
    raw_logprobs = torch.log_softmax(logits, dim=-1)
    tops = [_top_alternatives(raw_logprobs[i], p.top_logprobs) for i, p in enumerate(params)]
    if any(p.penalised or p.logit_bias for p in params):
        logits = logits.clone()
        for i, p in enumerate(params):
            _adjust(logits[i], p, outputs[i])
    chosen = torch.empty(len(params), dtype=torch.long)
    for i, p in enumerate(params):
        steps = len(outputs[i])
        if p.temperature < GREEDY_BELOW:
            chosen[i] = int(torch.argmax(logits[i]))
            continue
        probs = _top_p(torch.softmax(logits[i] / p.temperature, dim=-1), p.top_p)
        generator = None
        if p.seed is not None:  # reproducible per request, whatever else shares the batch
            generator = torch.Generator().manual_seed((p.seed * 1_000_003 + steps) % SEED_SPACE)
        chosen[i] = int(torch.multinomial(probs.cpu(), 1, generator=generator))
    chosen = chosen.to(logits.device)
    return chosen, raw_logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).cpu(), tops


def _adjust(logits: torch.Tensor, p: SamplingConfig, output: list[int]) -> None:
    """OpenAI's penalties on the tokens output so far, then the logit bias, in place."""
    if p.penalised and output:
        counts = torch.bincount(torch.tensor(output), minlength=logits.shape[-1])[: logits.shape[-1]]
        logits -= p.frequency_penalty * counts.to(logits) + p.presence_penalty * (counts > 0).to(logits)
    for token, bias in p.logit_bias:
        logits[token] += bias


def _top_alternatives(logprobs: torch.Tensor, k: int | None) -> tuple[list[int], list[float]] | None:
    if not k:
        return None
    values, ids = torch.topk(logprobs, min(k, logprobs.shape[-1]))
    return ids.tolist(), values.tolist()


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    # keep the smallest set of tokens whose mass reaches top_p (always at least one)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    outside[..., 0] = False  # a top_p below float32's smallest number compares as 0, which would drop them all
    sorted_probs[outside] = 0.0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum()
