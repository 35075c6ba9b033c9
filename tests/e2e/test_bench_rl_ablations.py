"""`python -m bench.rl_ablations` at its smallest setting: Muon, gold through RL and plain
SFT each train and are graded, and --merge joins runs into one table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BENCH = ["-m", "bench.rl_ablations"]  # run from ROOT
VARIANTS = ["grpo-muon", "gold-through-rl", "sft-gold-adamw"]


def test_rl_ablations_bench_runs_and_merges(tmp_path):
    out = tmp_path / "abl"
    subprocess.run([sys.executable, *BENCH, "--rounds", "2", "--questions", "2", "--group", "2",
                    "--eval-every", "2", "--eval-problems", "3", "--variants", *VARIANTS, "--out", str(out)],
                   check=True, capture_output=True, timeout=600, cwd=ROOT)
    results = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in results["runs"]] == VARIANTS
    for run in results["runs"]:
        curve = run["curve"]
        assert [p["round"] for p in curve] == [0, 2]
        assert [p["samples"] for p in curve] == [0, 8]  # 2 rounds x 2 questions x 2, gold variants too
        assert [p["steps"] for p in curve] == [0, 2]  # 4 samples fit one optimizer step per round
        assert curve[1]["minutes"] > curve[0]["minutes"] == 0.0
        assert all(p["accuracy"] * 3 == round(p["accuracy"] * 3) for p in curve)  # graded on exactly 3 problems
    # every variant starts from the same policy, graded the same way
    assert len({run["curve"][0]["accuracy"] for run in results["runs"]}) == 1
    assert results["runs"][0]["optimizer"] == "Muon 3e-4, AdamW 1e-5"
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| {name}" for name in VARIANTS]
    assert "(2 rounds)" in rows[0] and "(2 steps)" in rows[2]

    merged = tmp_path / "merged"
    subprocess.run([sys.executable, *BENCH, "--merge", str(out), str(out), "--out", str(merged)],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)
    assert len(json.loads((merged / "results.json").read_text())["runs"]) == 2 * len(VARIANTS)
