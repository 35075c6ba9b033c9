"""Shared checks for the app and end-to-end tests: metrics, streams dropped
mid-way, timeouts, and the files `openr eval` writes."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from openr.server.metrics import metric_in

DRAIN_TIMEOUT_S = 15  # a cancelled sample stops within a token or two; generous for a loaded CI machine
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first bytes of every PNG file (plots)
LONG_PROMPT = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]


def metric(url: str, name: str, **labels) -> float:
    return metric_in(httpx.get(f"{url}/metrics", timeout=10).text, name, **labels)


def wait_for_metric(url: str, name: str, value: float, timeout_s: float = DRAIN_TIMEOUT_S) -> float:
    deadline = time.monotonic() + timeout_s
    seen = metric(url, name)
    while seen != value and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = metric(url, name)
    return seen


def hold_stream_then_drop(url: str, model: str, headers: dict) -> tuple[float, float]:
    """Start a long streamed completion, read until text flows, record the
    running gauges while the stream is still held open, then drop the connection."""
    body = {"model": model, "messages": LONG_PROMPT, "max_tokens": 1000, "temperature": 0, "stream": True}
    with httpx.Client(timeout=120, headers=headers) as http:
        with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            # Keep a reference to the line iterator: a discarded httpx iterator
            # is closed by the garbage collector, which drops the connection
            # early and would make this test measure nothing.
            lines = response.iter_lines()
            for line in lines:
                if '"content":"' in line and '"content":""' not in line:
                    break
            running = metric(url, "openr:num_requests_running")
            sequences = metric(url, "openr:engine_sequences_running")
            lines.close()
        # leaving both blocks closes the socket: the server sees a disconnect
    return running, sequences


def time_out_non_streaming(url: str, model: str, headers: dict, timeout_s: float = 4.0) -> float:
    """A non-streaming request whose client gives up (closes the socket) after
    `timeout_s`; returns the running gauge observed while it was in flight.
    Eight seeded samples: the request lasts until the longest ends, far beyond
    the timeout, where a single greedy answer may end early on a fast engine."""
    body = {"model": model, "messages": LONG_PROMPT, "max_tokens": 1000, "temperature": 1.0, "seed": 1234, "n": 8}
    outcome = {}

    def call():
        try:
            response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout_s)
            outcome["finished"] = f"{response.status_code}: {response.text[:500]}"
        except httpx.TimeoutException:
            outcome["timed_out"] = True
        except httpx.HTTPError as exc:
            outcome["failed"] = repr(exc)

    thread = threading.Thread(target=call)
    thread.start()
    seen = wait_for_metric(url, "openr:num_requests_running", 1, timeout_s=timeout_s)
    thread.join()
    assert outcome.get("timed_out"), f"the long request ended before the client gave up: {outcome}"
    return seen


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "openr-serve.json"
SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def dashboard_metrics(path: Path = DASHBOARD) -> set[str]:
    """The metric families the Grafana dashboard's queries name (sample suffixes dropped)."""
    exprs = [target["expr"] for panel in json.loads(path.read_text())["panels"] for target in panel["targets"]]
    names = {name for expr in exprs for name in re.findall(r"openr:[a-zA-Z0-9_:]+", expr)}
    return {next((name.removesuffix(s) for s in SAMPLE_SUFFIXES if name.endswith(s)), name) for name in names}


def metric_families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}
