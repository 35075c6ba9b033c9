"""The end-to-end tests' servers: `openr serve` as the package's launcher starts
it, behind the tests' API key, and vLLM's own OpenAI-compatible server."""

from __future__ import annotations

from openr.server import launcher

API_KEY = "test-key"


class ServerProcess(launcher.ServerProcess):
    """`with ServerProcess(["--engine", "hf"]) as server: server.base_url ...`, requiring
    API_KEY unless `api_key` says otherwise (None: open)."""

    def __init__(self, args: list[str], api_key: str | None = API_KEY):
        super().__init__(args, api_key=api_key)


class VLLMServer(launcher.VLLMProcess):
    """vLLM's own OpenAI-compatible server, as `openr.server.launcher` runs it on a CPU."""
