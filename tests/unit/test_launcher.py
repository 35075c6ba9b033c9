"""The launcher's own behaviour, with stand-in children (the end-to-end tests
start real servers with it): a child that dies or never gets healthy is
reported with its output and left stopped; `metric_in` sums the samples asked for."""

from __future__ import annotations

import sys

import pytest

from openr.server.launcher import ServerProcess, free_port
from openr.server.metrics import metric_in


class ScriptServer(ServerProcess):
    """Runs a Python one-liner instead of `openr serve`."""

    def __init__(self, script: str, startup_timeout_s: float = 30):
        super().__init__([], startup_timeout_s=startup_timeout_s)
        self.script = script

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script]


def test_a_child_that_exits_is_reported_with_its_output():
    server = ScriptServer("print('no model here'); raise SystemExit(3)")
    with pytest.raises(RuntimeError, match=r"exited with 3:\nno model here"):
        with server:
            pass
    assert server.proc.returncode == 3


def test_a_child_never_healthy_is_stopped_after_the_startup_timeout():
    server = ScriptServer("import time; print('loading', flush=True); time.sleep(600)", startup_timeout_s=1)
    with pytest.raises(RuntimeError, match=r"was not healthy within 1 s:\nloading"):
        server.start()
    assert server.proc.poll() is not None  # stopped, not left running


def test_flags_name_the_chosen_port_and_the_api_key():
    server = ServerProcess(["--engine", "hf"], api_key="k")
    assert server.args == ["--host", "127.0.0.1", "--port", str(server.port), "--engine", "hf", "--api-key", "k"]
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert "--api-key" not in ServerProcess([]).args
    assert server.output() == "" and 0 < free_port() < 65536
    server.stop()  # never started: nothing to stop


def test_metric_in_sums_the_samples_whose_labels_match():
    text = ('# TYPE openr:request_success counter\n'
            'openr:request_success_total{finished_reason="stop",model_name="m"} 2.0\n'
            'openr:request_success_total{finished_reason="length",model_name="m"} 3.0\n')
    assert metric_in(text, "openr:request_success_total") == 5.0
    assert metric_in(text, "openr:request_success_total", finished_reason="length") == 3.0
    assert metric_in(text, "openr:request_success_total", finished_reason="abort") == 0.0
    assert metric_in(text, "openr:absent_total") == 0.0
