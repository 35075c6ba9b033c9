"""One round's update of the policy (and PPO's critic) from its episodes.

- Advantages per step: GAE on the value head (PPO) or group normalisation
  (GRPO); expert iteration has none, it fine-tunes on the verified-correct
  samples instead.
- Clipped policy-gradient steps on the action tokens, in minibatches of
  `minibatch_size` episodes whose gradients are accumulated up to
  `optimizer_batch_size` episodes per optimizer step.
- PPO's critic: its bias starts at the first round's mean return, and for
  `critic_warmup_iterations` rounds only the critic learns, so the policy never
  moves on advantages from a critic that has not fitted yet.
- Diagnostics (`openr.rl.diagnostics`): the gradient signal, the share of
  samples with zero advantage, explained variance, clip fraction, KL.
"""

from __future__ import annotations

import math
import statistics

import torch

from openr.rl.advantages import gae, group_outcome_advantages, group_process_advantages, normalise
from openr.rl.diagnostics import explained_variance, flat_gradient, gradient_cosine, split_halves, zero_advantage_share
from openr.rl.env import Episode
from openr.rl.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    kl_to_reference,
    masked_mean,
    token_advantages,
    token_view,
)
from openr.rl.rollout import EncodedBatch, encode_episodes, select_rows


def step_advantages(config, episodes: list[Episode],
                    old_values: list[torch.Tensor] | None) -> tuple[list[list[float]], list[list[float]]]:
    """Per-step advantages, and (PPO) the returns the value head regresses to."""
    if config.algo == "ppo":
        advantages, returns = [], []
        for episode, values in zip(episodes, old_values):
            values = values.tolist()
            steps = len(episode.rewards)
            bootstrap = episode.truncated and episode.invalid is None  # cut by a cap, not ended
            a, r = gae(episode.rewards, values[:steps], values[steps] if bootstrap else 0.0, config.gamma,
                       config.lam)
            advantages.append(a)
            returns.append(r)
        flat = [a for steps in advantages for a in steps]
        mean, std = statistics.fmean(flat), statistics.pstdev(flat)
        return [normalise(steps, mean, std) for steps in advantages], returns
    advantages = []
    for start in range(0, len(episodes), config.group_size):
        group = episodes[start : start + config.group_size]
        if config.reward == "outcome":
            totals = group_outcome_advantages([sum(e.rewards) for e in group])
            advantages += [[total] * len(e.rewards) for total, e in zip(totals, group)]
        else:
            advantages += group_process_advantages([e.rewards for e in group])
    return advantages, []


def minibatches(batch: EncodedBatch, size: int) -> list[torch.Tensor]:
    """Row indices in minibatches of similar length (little padding: episodes
    here run from ~100 to ~550 tokens)."""
    lengths = batch.attention_mask.sum(1).tolist()
    by_length = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [torch.tensor(by_length[s : s + size]) for s in range(0, len(by_length), size)]


def minibatches_per_step(config) -> int:
    """The minibatches whose gradients one optimizer step accumulates."""
    return max(1, math.ceil(config.optimizer_batch_size / config.minibatch_size))


def accumulated(order: list[int], config):
    """Each minibatch of `order` with the share of its optimizer step's loss (1 /
    the minibatches that step accumulates) and whether the step is taken after it."""
    per_step = minibatches_per_step(config)
    for position, k in enumerate(order):
        in_this_step = min(per_step, len(order) - position // per_step * per_step)
        yield k, 1.0 / in_this_step, (position + 1) % per_step == 0 or position + 1 == len(order)


def optimizer_steps(minibatch_count: int, config) -> int:
    """The optimizer steps a round of `minibatch_count` minibatches takes over its `update_epochs`."""
    return config.update_epochs * math.ceil(minibatch_count / minibatches_per_step(config))


def policy_update(run, episodes: list[Episode], iteration: int, generator: torch.Generator) -> dict:
    """Advantages, then `update_epochs` passes of clipped policy-gradient steps
    (PPO's critic alone during its warm-up), in a seeded random order."""
    config = run.config
    batch = encode_episodes(episodes, run.tokenizer, run.pad_id)
    chunks = minibatches(batch, config.minibatch_size)
    old, reference, values = [], [], [None] * len(episodes)
    with torch.no_grad(), run.autocast():
        for rows in chunks:
            sub = select_rows(batch, rows)
            old.append(token_view(run.model, sub, run.value_head, config.temperature))
            reference.append(token_view(run.reference, sub, temperature=config.temperature)
                             if run.reference is not None else None)
            for row, value in zip(rows.tolist(), old[-1].values or []):
                values[row] = value
    if config.algo == "ppo" and iteration == 0 and not run.state.history:
        values = start_critic_at_mean_return(run, episodes, values)
    advantages, returns = step_advantages(config, episodes, values)
    if run.advantage_transform is not None:
        advantages = run.advantage_transform(episodes, advantages)
    metrics = {"zero_advantage_share": zero_advantage_share(advantages)}
    if config.gradient_signal:
        metrics["gradient_signal"] = gradient_signal(run, batch, advantages)
    critic_only = config.algo == "ppo" and iteration < config.critic_warmup_iterations
    logs: dict[str, list[float]] = {}
    steps, taken = optimizer_steps(len(chunks), config), 0
    for _ in range(config.update_epochs):
        order = torch.randperm(len(chunks), generator=generator).tolist()
        for k, share, step_now in accumulated(order, config):
            step = minibatch_loss(run, select_rows(batch, chunks[k]), chunks[k].tolist(), old[k], reference[k],
                                  advantages, returns, critic_only)
            (step.pop("loss") * share).backward()
            if step_now:
                run.round_lr(taken, steps)
                optimizer_step(run, critic_only)
                taken += 1
            for name, value in step.items():
                logs.setdefault(name, []).append(value)
    metrics |= {name: statistics.fmean(values) for name, values in logs.items()}
    if config.algo == "ppo":
        predicted = torch.cat([v[: len(e.rewards)] for v, e in zip(values, episodes)])
        metrics["explained_variance"] = explained_variance(predicted, torch.tensor([r for s in returns for r in s]))
        metrics["critic_only"] = critic_only
    return metrics


def start_critic_at_mean_return(run, episodes: list[Episode], values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Set the value head's bias to the mean return of the first round (a critic
    starting at 0 under returns of 1-6 spends its first rounds catching up, and
    GAE's advantages meanwhile follow step position); returns the values as the
    shifted critic predicts them."""
    returns = [sum(episode.rewards[t:]) for episode in episodes for t in range(len(episode.rewards))]
    shift = statistics.fmean(returns) if returns else 0.0
    with torch.no_grad():
        run.value_head.linear.bias.add_(shift)
    return [v + shift for v in values]


def minibatch_loss(run, sub: EncodedBatch, rows: list[int], old, reference, advantages, returns,
                   critic_only: bool) -> dict:
    """The minibatch's loss (under "loss", to backpropagate) and its statistics."""
    config = run.config
    with run.autocast():
        view = token_view(run.model, sub, run.value_head, config.temperature)
    mask = view.mask
    token_adv = token_advantages([advantages[r] for r in rows], view.step_index)
    policy_loss, stats = clipped_policy_loss(view.logprobs, old.logprobs, token_adv, mask, config.clip)
    entropy = masked_mean(view.entropy, mask)
    loss = policy_loss - config.entropy_coef * entropy
    logs = {"policy_loss": policy_loss.item(), "entropy": entropy.item(), **stats}
    if reference is not None:
        kl = kl_to_reference(view.logprobs, reference.logprobs, mask)
        loss = loss + config.kl_coef * kl
        logs["kl"] = kl.item()
    if run.value_head is not None:
        steps = [len(returns[r]) for r in rows]
        predicted = torch.cat([v[:n] for v, n in zip(view.values, steps)])
        previous = torch.cat([v[:n] for v, n in zip(old.values, steps)])
        target = torch.tensor([x for r in rows for x in returns[r]])
        value_loss = clipped_value_loss(predicted.float(), previous, target, config.value_clip)
        loss = (0.0 if critic_only else loss) + config.value_coef * value_loss
        logs["value_loss"] = value_loss.item()
    return {"loss": loss, **logs}


def optimizer_step(run, critic_only: bool = False) -> None:
    """Clip the accumulated gradient's norm and step; during PPO's critic warm-up
    only the value head moves (the trunk's gradients from the value loss are dropped)."""
    if critic_only:
        for parameter in run.model.parameters():
            parameter.grad = None
    parameters = [p for group in run.optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(parameters, run.config.max_grad_norm)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def gradient_signal(run, batch: EncodedBatch, advantages: list[list[float]]) -> float:
    """The cosine between the policy gradients of two halves of the round (whole
    groups each), at the weights the round starts from: the plain policy
    gradient (ratio 1), without KL or entropy, which carry no reward signal."""
    config = run.config
    halves = split_halves(len(advantages), config.group_size)
    if not all(halves):  # a single group: nothing to compare
        return 0.0

    def loss(sub: EncodedBatch, rows: list[int]) -> torch.Tensor:
        with run.autocast():
            view = token_view(run.model, sub, temperature=config.temperature)
        token_adv = token_advantages([advantages[r] for r in rows], view.step_index)
        ratio = torch.exp(view.logprobs - view.logprobs.detach())
        return masked_mean(-ratio * token_adv, view.mask)

    return halves_cosine(run, batch, halves, loss)


def halves_cosine(run, batch: EncodedBatch, halves, loss) -> float:
    """The cosine between the gradients of `loss(minibatch, its rows in batch)`
    summed over each of two halves of `batch`'s rows; leaves no gradient behind."""
    gradients = []
    for half in halves:
        run.optimizer.zero_grad(set_to_none=True)
        sub_batch = select_rows(batch, torch.tensor(half))
        for rows in minibatches(sub_batch, run.config.minibatch_size):
            loss(select_rows(sub_batch, rows), [half[r] for r in rows.tolist()]).backward()
        gradients.append(flat_gradient(run.model.parameters()))
    run.optimizer.zero_grad(set_to_none=True)
    return gradient_cosine(*gradients)


def accepted_episodes(episodes: list[Episode], min_prm: float = 0.0) -> tuple[list[Episode], int]:
    """Expert iteration's training set: one of each distinct verified-correct
    solution per question, less those with a step the PRM scores under
    `min_prm` (when set); and how many that filter rejected."""
    seen, accepted, rejected = set(), [], 0
    for episode in episodes:
        key = (episode.problem.id, tuple(step.text for step in episode.actions))
        if not episode.correct or key in seen:
            continue
        seen.add(key)
        if min_prm and min(episode.step_scores) < min_prm:
            rejected += 1
            continue
        accepted.append(episode)
    return accepted, rejected


def expert_iteration_update(run, episodes: list[Episode], generator: torch.Generator) -> dict:
    """Fine-tune on the round's verified-correct samples (one of each distinct
    solution per question; with `accept_min_prm`, only those whose every step
    the PRM scores at least that), `update_epochs` passes of next-token loss on
    the action tokens. Havrilla et al. (2024) found this as good as PPO or
    better in most of their settings."""
    config = run.config
    accepted, rejected = accepted_episodes(episodes, config.accept_min_prm)
    metrics = {"accepted": len(accepted), "accepted_share": len(accepted) / max(len(episodes), 1),
               "rejected_by_prm": rejected}
    if not accepted:
        return metrics
    batch = encode_episodes(accepted, run.tokenizer, run.pad_id)
    if config.gradient_signal and len(accepted) >= 2:
        metrics["gradient_signal"] = nll_gradient_signal(run, batch)
    chunks = minibatches(batch, config.minibatch_size)
    losses, steps, taken = [], optimizer_steps(len(chunks), config), 0
    for _ in range(config.update_epochs):
        order = torch.randperm(len(chunks), generator=generator).tolist()
        for k, share, step_now in accumulated(order, config):
            with run.autocast():
                view = token_view(run.model, select_rows(batch, chunks[k]), temperature=1.0)
            loss = -masked_mean(view.logprobs, view.mask)
            (loss * share).backward()
            if step_now:
                run.round_lr(taken, steps)
                optimizer_step(run)
                taken += 1
            losses.append(loss.item())
    return metrics | {"nll": statistics.fmean(losses)}


def nll_gradient_signal(run, batch: EncodedBatch) -> float:
    """Expert iteration's gradient signal: the cosine between the fine-tuning
    gradients of two halves of the accepted samples (even and odd rows), at the
    round's starting weights, as `gradient_signal` measures GRPO's."""
    rows = range(len(batch.input_ids))

    def loss(sub: EncodedBatch, _rows: list[int]) -> torch.Tensor:
        with run.autocast():
            view = token_view(run.model, sub, temperature=1.0)
        return -masked_mean(view.logprobs, view.mask)

    return halves_cosine(run, batch, (list(rows[0::2]), list(rows[1::2])), loss)
