"""The machine a run ran on, the device it runs on, and the dtype it trains
and infers in.

A training figure means little without the machine: bfloat16 autocast is
native on some CPUs and emulated, 12x slower than float32, on AVX2-only ones,
and a wall-clock limit that binds on a slow CPU trains a different model. So
every training summary records `machine_info()`, the dtype is chosen here with
the reason said out loud, and a time cap (`TimeCap`) is opt-in and loud. The
device (`choose_device`) and the dtype models are served in (`inference_dtype`)
are decided here too, once, so that a test can stub the GPU check and see both
branches on a CPU.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
# /proc/cpuinfo flags that decide how fast (and in which dtype) training runs.
CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a run trains in (weights stay float32; bfloat16 means autocast) and why."""

    name: str  # "float32" or "bfloat16"
    reason: str

    @property
    def autocast(self) -> bool:
        return self.name == "bfloat16"

    def summary(self) -> dict:
        return {"dtype": self.name, "dtype_reason": self.reason}


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` computes bfloat16 matmuls natively. On a CPU that means
    oneDNN has bf16 kernels for it (AVX512-BF16 or AMX); elsewhere it emulates
    them, far slower than float32."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def choose_dtype(requested: str = "auto", device: str = "cpu") -> DtypeChoice:
    """`auto`: bfloat16 autocast where `device` has native bf16, float32 elsewhere.
    An explicit dtype is taken as asked, with a warning when bfloat16 is asked of
    a device that would emulate it."""
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {requested!r}")
    native = native_bf16(device)
    if requested == "auto":
        if native:
            choice = DtypeChoice("bfloat16", f"auto: {device} has native bfloat16 matmuls")
        else:
            choice = DtypeChoice("float32", f"auto: {device} has no native bfloat16 (it would be emulated, "
                                            "about 12x slower than float32 on AVX2)")
    else:
        choice = DtypeChoice(requested, f"asked for ({'native' if native else 'no native'} bfloat16 on {device})")
        if requested == "bfloat16" and not native:
            logger.warning("bfloat16 asked for, but %s has no native bfloat16: training will be much slower "
                           "than in float32", device)
    logger.info("training dtype %s (%s)", choice.name, choice.reason)
    return choice


def choose_device(requested: str = "auto") -> str:
    """`auto`: cuda where torch sees a GPU, else cpu. `cuda` asked of a machine
    without one is refused here, before any model loads, with torch's build."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {requested!r}")
    gpu = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if gpu else "cpu"
    if requested == "cuda" and not gpu:
        raise ValueError(f"device cuda asked for, but torch {torch.__version__} sees no GPU "
                         f"(built for CUDA {torch.version.cuda or 'none: a CPU-only build'})")
    return requested


def inference_dtype(device: str) -> torch.dtype:
    """The dtype a served model (policy or PRM) is loaded in: float32 on a CPU,
    where float16 matmuls are emulated and the numbers then match training's;
    float16 on a GPU, half the memory traffic of float32 (the decode and the
    PRM's forward passes are bound by it) on every GPU torch supports."""
    return torch.float32 if device == "cpu" else torch.float16


def device_name(device: str) -> str:
    """What a figure measured on `device` ran on: the GPU's name, or the CPU's model."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model_and_flags()[0]


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of CPU_FLAGS_OF_INTEREST it has (Linux;
    elsewhere the platform's processor string and no flags)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == platform.machine():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, [flag for flag in CPU_FLAGS_OF_INTEREST if flag in flags]


def machine_info() -> dict:
    """What every time figure needs beside it: CPU model and flags, cores, the
    threads torch uses, whether bf16 is native, and the torch build."""
    model, flags = cpu_model_and_flags()
    # torch_isa is the instruction set torch's own kernels use: lower than the
    # flags when restricted (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), as when
    # an AVX2-only CPU is emulated on a newer one.
    info = {"cpu": model, "cpu_flags": flags, "torch_isa": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "native_bf16": native_bf16("cpu"), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


class TimeCap:
    """An opt-in wall-clock cap on a training loop (0 minutes: none), checked
    between steps. It only stops a run: schedules follow steps, never the clock,
    so a cap that does not bind changes nothing. When it binds it says so on
    stderr and in the log, and `summary()` records it."""

    def __init__(self, minutes: float, what: str):
        if minutes < 0:
            raise ValueError(f"a time cap is >= 0 minutes, got {minutes}")
        self.minutes, self.what = minutes, what
        self.start = time.monotonic()
        self.bound = False

    def reached(self, step: int, planned: int) -> bool:
        if not self.minutes or time.monotonic() - self.start < self.minutes * 60:
            return False
        if not self.bound:
            self.bound = True
            message = (f"WARNING: {self.what} stopped by its {self.minutes:g}-minute time cap after {step} of "
                       f"{planned} steps: this model is not the one the config describes")
            logger.warning(message)
            print(message, file=sys.stderr, flush=True)
        return True

    def summary(self, steps_done: int, steps_planned: int) -> dict:
        return {"steps": steps_done, "steps_planned": steps_planned, "max_minutes": self.minutes or None,
                "stopped_by_time_cap": self.bound, "minutes": (time.monotonic() - self.start) / 60}
