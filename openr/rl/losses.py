"""The policy-gradient pieces PPO and GRPO share: per-token log-probabilities
of the actions, the clipped surrogate, the KL to the reference policy, the
entropy bonus, and PPO's clipped value loss on a value head.

Every loss is a mean over action tokens only (`TokenView.mask`):
never the question, the observation or the padding. With causal shifting, the
log-probability of token p comes from the logits at p - 1; `token_view`
applies that shift once, for every quantity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openr.rl.rollout import NOT_ACTION, EncodedBatch


class ValueHead(torch.nn.Module):
    """V(s) read from the policy's last hidden state at the state's last token."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1)


@dataclass
class TokenView:
    """Per-token quantities of the predicted tokens (positions 1..L-1 of each
    row), with the step each belongs to; `values` holds V(s_t) per row and step."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    step_index: torch.Tensor
    values: list[torch.Tensor] | None = None

    @property
    def mask(self) -> torch.Tensor:
        return self.step_index != NOT_ACTION


def token_view(model, batch: EncodedBatch, value_head: ValueHead | None = None,
               temperature: float = 1.0) -> TokenView:
    """Log-probability and entropy of every next token under `model` at the
    rollouts' sampling `temperature` (the policy that chose the actions is
    softmax(logits / T), so that is the one the ratio and KL compare), and with a
    value head the values at each state's last token (including the final state)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                output_hidden_states=value_head is not None)
    logits = out.logits[:, :-1].float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = batch.input_ids[:, 1:]
    logprobs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    values = None
    if value_head is not None:
        all_values = value_head(out.hidden_states[-1])
        values = [all_values[b, ends] for b, ends in enumerate(batch.state_end)]
    return TokenView(logprobs, entropy, batch.step_index[:, 1:], values)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def token_advantages(step_advantages: list[list[float]], step_index: torch.Tensor) -> torch.Tensor:
    """Each action token gets its step's advantage (0 elsewhere)."""
    width = max(len(a) for a in step_advantages) + 1
    table = torch.zeros((len(step_advantages), width))
    for b, advantages in enumerate(step_advantages):
        table[b, : len(advantages)] = torch.tensor(advantages, dtype=torch.float)
    # NOT_ACTION (-1) wraps to the last column, which stays 0
    return table.gather(1, step_index % width)


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate, per token; returns the loss and clip statistics."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * advantages
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio - 1).abs() > clip).float(), mask).item()
        approx_kl = masked_mean((ratio - 1) - torch.log(ratio), mask).item()  # KL(old || new), k3
    return loss, {"clipfrac": clip_fraction, "approx_kl": approx_kl}


def kl_to_reference(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(policy || reference) per token with the k3 estimator (Schulman 2020),
    unbiased and never negative, as GRPO uses it."""
    log_ratio = ref_logprobs - logprobs
    return masked_mean(torch.exp(log_ratio) - log_ratio - 1, mask)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> torch.Tensor:
    """Half the larger of the plain and the clipped squared error (PPO2); a clip
    of 0 turns clipping off (half the plain squared error), rather than freezing
    the values where they were."""
    if clip <= 0:
        return 0.5 * ((values - returns) ** 2).mean()
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2).mean()
