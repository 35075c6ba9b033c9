"""torch's GPU check stubbed, so that a test on a CPU takes the GPU branches
of device, engine and dtype choices (nothing is moved to a GPU)."""

from __future__ import annotations

import torch

GPU_NAME = "NVIDIA H100 80GB HBM3"


def stub_gpu(monkeypatch, present: bool) -> None:
    """torch sees one GPU named GPU_NAME (present), or none, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: GPU_NAME)
