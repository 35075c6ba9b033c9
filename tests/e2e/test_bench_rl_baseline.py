"""`python -m bench.rl_baseline` at its smallest setting: both sides train and are graded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_rl_baseline_bench_runs_both_sides(tmp_path):
    out = tmp_path / "rlb"
    subprocess.run([sys.executable, "-m", "bench.rl_baseline", "--rounds", "2", "--questions", "2",
                    "--group", "2", "--minibatch", "4", "--eval-every", "2", "--eval-problems", "3",
                    "--out", str(out)], check=True, capture_output=True, timeout=900, cwd=ROOT)
    results = json.loads((out / "results.json").read_text())
    assert set(results["curves"]) == {"ours", "trl"}
    for curve in results["curves"].values():
        assert [p["round"] for p in curve] == [0, 2]
        assert [p["samples"] for p in curve] == [0, 8]
        assert curve[1]["minutes"] > curve[0]["minutes"] == 0.0
        assert all(p["accuracy"] * 3 == round(p["accuracy"] * 3) for p in curve)  # graded on exactly 3 problems
    # both sides start from the same policy, graded the same way
    assert results["curves"]["ours"][0]["accuracy"] == results["curves"]["trl"][0]["accuracy"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith(("| ours", "| trl"))]
    assert len(rows) == 4
