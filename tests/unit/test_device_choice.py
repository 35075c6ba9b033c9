"""The GPU branches, run on a CPU with the GPU check stubbed: which engine and
device `--engine auto` takes, which device `auto` means, the dtype a served
model loads in (float16 on a GPU, bfloat16 autocast for training where native),
and that the PRM and the hf engine work in float16. What only a GPU can show
(speed) is bench/gpu_check.sh's."""

from __future__ import annotations

import math

import pytest
import torch

from openr import engine as engines
from openr import hardware
from openr.engine import choose_engine
from openr.engine.base import SamplingConfig
from openr.engine.checkpoints import ARITH_ALIAS, split_bundle
from openr.engine.hf_engine import HFEngine
from openr.hardware import choose_device, choose_dtype, device_name, inference_dtype, machine_info
from openr.prm import causal_lm, load_prm
from tests.support.stub_gpu import GPU_NAME, stub_gpu
from tests.support.tiny_public import qwen_prm

POLICY, PRM = split_bundle(ARITH_ALIAS)
QUESTION = "What is 3 + 4 * 2?"
CANDIDATES = [["4 * 2 = 8", "3 + 8 = 11", "The answer is 11"], ["3 + 4 = 7", "7 * 2 = 14"], ["4 * 2 = 8"]]


@pytest.fixture(params=[True, False], ids=["gpu", "no-gpu"])
def gpu(request, monkeypatch) -> bool:
    stub_gpu(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("vllm", [True, False], ids=["vllm", "no-vllm"])
def test_engine_auto_takes_vllm_on_a_gpu_and_transformers_elsewhere(gpu, vllm, monkeypatch):
    monkeypatch.setattr(engines, "vllm_installed", lambda: vllm)
    kind, device, why = choose_engine("auto")
    assert device == ("cuda" if gpu else "cpu")
    assert kind == ("vllm" if gpu and vllm else "hf")
    if gpu and not vllm:
        assert "vLLM is not installed" in why
    if not gpu:
        assert "no GPU" in why


def test_an_engine_asked_for_is_taken_on_either_device(gpu):
    assert choose_engine("hf") == ("hf", "cuda" if gpu else "cpu", "asked for with --engine")
    assert choose_engine("vllm")[:2] == ("vllm", "cuda" if gpu else "cpu")


def test_device_auto_follows_the_gpu_and_cpu_is_always_allowed(gpu):
    assert choose_device("auto") == ("cuda" if gpu else "cpu")
    assert choose_device("cpu") == "cpu"
    if gpu:
        assert choose_device("cuda") == "cuda"
    else:
        with pytest.raises(ValueError, match="sees no GPU"):
            choose_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        choose_device("tpu")


def test_served_models_load_in_float32_on_a_cpu_and_float16_on_a_gpu():
    assert inference_dtype("cpu") == torch.float32
    assert inference_dtype("cuda") == inference_dtype("cuda:1") == torch.float16


def test_the_gpu_is_named_beside_the_cpu(gpu):
    info = machine_info()
    assert ("gpu" in info) == gpu and info.get("gpu", GPU_NAME) == GPU_NAME
    assert device_name("cpu") == hardware.cpu_model_and_flags()[0]
    if gpu:
        assert device_name("cuda") == GPU_NAME


@pytest.mark.parametrize("native", [True, False])
def test_training_auto_dtype_on_a_gpu_follows_its_bf16_support(monkeypatch, native):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: native)
    assert choose_dtype("auto", "cuda").name == ("bfloat16" if native else "float32")


@pytest.fixture(params=["openr-arith", "qwen-prm"])
def prm_dir(request, tmp_path) -> str:
    """openr-arith's PRM (ours: a likelihood verifier) and a tiny Qwen2.5-Math-PRM-format one."""
    return PRM if request.param == "openr-arith" else str(qwen_prm(tmp_path / "qwen-prm"))


def test_the_prm_scores_in_float16_as_in_float32(prm_dir, monkeypatch):
    """The forward pass a GPU runs, in its dtype, on this CPU: float16 weights,
    rows run on from the prefix cache's float16 keys and values, float32 scores."""
    pairs = [(QUESTION, steps) for steps in CANDIDATES]
    reference = load_prm(prm_dir, cache_mb=0).score_batch(pairs)
    monkeypatch.setattr(causal_lm, "inference_dtype", lambda device: torch.float16)
    prm = load_prm(prm_dir)
    assert prm.model.dtype == torch.float16
    prm.score_batch([(QUESTION, steps[:1]) for steps in CANDIDATES])  # caches every first step
    forwarded = prm.forwarded_tokens
    scores = prm.score_batch(pairs)
    assert prm.forwarded_tokens - forwarded < sum(len(prm.encode(*pair).ids) for pair in pairs)  # ran on from it
    for half, full in zip(scores, reference):
        assert half == pytest.approx(full, abs=5e-3)


@pytest.mark.anyio
async def test_the_hf_engine_samples_in_float16(monkeypatch):
    monkeypatch.setattr(hardware, "inference_dtype", lambda device: torch.float16)
    engine = HFEngine(POLICY)
    await engine.start()
    try:
        assert engine.dtype == "float16"
        prompt = (await engine.prepare_chat([{"role": "user", "content": QUESTION}])).text
        config = SamplingConfig(16, temperature=0.8, seed=7)
        first, second = [await engine.complete(prompt, config) for _ in range(2)]
        assert first.num_tokens > 0 and first.text.strip()
        assert all(math.isfinite(logprob) and logprob <= 0 for logprob in first.token_logprobs)
        assert (second.text, second.token_logprobs) == (first.text, first.token_logprobs)  # seeded as in float32
    finally:
        await engine.close()
