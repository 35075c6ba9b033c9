"""Muon whose Newton-Schulz orthogonalisation runs in the run's own dtype.

`torch.optim.Muon` casts every update to bfloat16 for its Newton-Schulz
iterations. On a CPU without native bfloat16 (AVX2-only) those matmuls are
emulated: measured on a 2-core EPYC limited to AVX2, the optimizer step of the
openr-arith policy took 530-730 ms of a 0.8-1.1 s training step, against 35 ms
with native bf16. It also makes a float32 run depend on the CPU's bfloat16
kernels. This subclass keeps torch's Muon (its defaults, validation, state and
learning-rate adjustment) and changes only the dtype of that iteration: float32
for a float32 run, bfloat16 (torch's choice) for a bfloat16 run.
"""

from __future__ import annotations

import torch
from torch.optim._muon import _adjust_lr


def orthogonalise(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """The quintic Newton-Schulz iteration of Muon (Jordan et al. 2024) in `dtype`:
    maps `update` to about U V^T of its SVD, on the wide side for fewer flops."""
    a, b, c = coefficients
    x = update.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(update.dtype)


class Muon(torch.optim.Muon):
    """`torch.optim.Muon` with `ns_dtype` for the Newton-Schulz iteration."""

    def __init__(self, params, ns_dtype: torch.dtype = torch.float32, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            lr, momentum = group["lr"], group["momentum"]
            for param, grad, buffer in zip(params, grads, buffers):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalise(update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       self.ns_dtype)
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], param.shape))
        return loss


class OptimizerGroup:
    """Several torch optimizers stepped as one (the policy's Muon + AdamW split,
    and PPO's value head), for code written against a single optimizer:
    `param_groups`, `step`, `zero_grad`, and a `state_dict` that resumes."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers
        self.param_groups = [group for optimizer in optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(f"a saved state of {len(state['optimizers'])} optimizers for {len(self.optimizers)}")
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)


def clear_state(optimizer) -> None:
    """Forget what `optimizer` (a torch optimizer or an OptimizerGroup) has
    accumulated (moments, momentum buffers), keeping its parameter groups."""
    for each in getattr(optimizer, "optimizers", [optimizer]):
        each.state.clear()
