"""bench/gpu_check.sh as a GPU machine runs it, here on the CPU (`--device cpu`)
at its smallest: every figure of both runs in its result file; and without
math-verify or the wheels that bring it, a usage error that says how to fetch them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env=os.environ | {"PYTHON": sys.executable} | (env or {}))


def test_the_gpu_check_runs_end_to_end_on_a_cpu(tmp_path):
    out = tmp_path / "gpu_check_cpu.json"
    done = run_script("--device", "cpu", "--problems", "1", "--searches", "2", "--rounds", "1",
                      "--forward-sizes", "1", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["complete"] and record["device"] == "cpu" and record["device_name"] == record["machine"]["cpu"]
    assert record["packages"]["torch"] and record["command"].startswith("python -m bench.gpu_check --device cpu")
    assert len(record["runs"]) == 2  # openr-arith's PRM, and the Qwen2.5-Math-PRM-format one
    for run in record["runs"].values():
        assert set(run["figures"]) == {"1", "2", "2b", "3"}
        assert all(value > 0 for value in run["figures"].values())
        assert set(run["prm_tokens_per_s_by_rows"]) == {"1", "2"}
        assert run["rows_per_forward_by_rows"]["1"] == 1.0 and 1.0 < run["rows_per_forward_by_rows"]["2"] <= 2.0
        assert run["search_bench"]["settings"]["device"] == "cpu"
    assert "qwen-prm format" in record["runs"]["openr-arith policy, qwen-prm PRM"]["prm"]


def test_without_math_verify_or_its_wheels_it_says_how_to_fetch_them(tmp_path):
    # A Python that cannot import math_verify, as on the GPU image before the wheels.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nfrom importlib.abc import MetaPathFinder\n"
        "class Lacking(MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'math_verify':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Lacking())\n")
    done = run_script("--device", "cpu", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1
    assert "no math_verify" in done.stderr and "--download DIR" in done.stderr
