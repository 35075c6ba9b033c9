"""Every benchmark the README shows runs as written (`python -m bench.NAME` from
the repository root), at its smallest setting (each prints its table; a bench
that fails to start is a failing test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_serve_overhead_on_the_default_model(tmp_path):
    out = run_bench("serve_overhead", "--engines", "hf", "--batches", "1", "--rounds", "1", "--max-tokens", "4",
                    "--out", str(tmp_path / "overhead.json"))
    row = next(line for line in out.splitlines() if line.startswith("| hf | 1 |"))
    assert row.endswith("| (4, 4, 4) |")  # the direct, SDK and raw paths each generated the 4 tokens asked for
    record = json.loads((tmp_path / "overhead.json").read_text())
    assert record["command"].startswith("python -m bench.serve_overhead --engines hf")
    assert record["machine"]["cpu_count"] > 0 and record["date"]
    [written] = record["rows"]
    assert (written["engine"], written["batch"], written["tokens"]) == ("hf", 1, [4, 4, 4])


@pytest.mark.vllm
def test_serve_overhead_on_the_default_model_with_vllm():
    # the README's command runs both engines; vLLM refuses a context longer than the model's (768 here)
    out = run_bench("serve_overhead", "--engines", "vllm", "--batches", "1", "--rounds", "1", "--max-tokens", "4")
    row = next(line for line in out.splitlines() if line.startswith("| vllm | 1 |"))
    assert row.endswith("| (4, 4, 4) |")


def test_search_bench_smallest():
    out = run_bench("search_bench", "--engine", "hf", "--rounds", "1", "--problems", "1", "--searches", "2",
                    "--n", "2", "--beam-width", "1", "--max-steps", "1", "--max-step-tokens", "8")
    table = out[out.rindex("| figure |"):]
    for figure in ("| 1. search tok/s", "| 2. PRM steps/s", "| 2b. PRM tok/s", "| 3. per-node serving",
                   "| 5. beam search p50 / best-of-N p50, 2 in flight"):
        assert figure in table  # each figure measured, not skipped
        assert "skipped" not in next(line for line in table.splitlines() if line.startswith(figure))


def test_search_profile_smallest(tmp_path):
    out = run_bench("search_profile", "--problems", "2", "--in-flight", "2", "--n", "2", "--beam-width", "1",
                    "--max-steps", "2", "--json", str(tmp_path / "profile.json"))
    assert "| beam_search-n2-bw1 | 2 |" in out and "| best_of_n-n2 | 2 |" in out
    for row in json.loads((tmp_path / "profile.json").read_text())["rows"]:
        assert row["engine_requests"] == row["policy_round_trips"] > 0  # the engine timed each of its requests
        assert row["policy_s"] + row["prm_s"] <= row["wall_s"]


def test_train_step_smallest(tmp_path):
    out = run_bench("train_step", "--rounds", "3", "--problems", "64", "--out", str(tmp_path / "step.json"))
    lines = out.splitlines()
    rows = lines[lines.index(next(line for line in lines if line.startswith("setting"))) + 1:]
    ratios = {row[:22].strip(): float(row[22:].split()[1]) for row in rows if row.strip()}
    assert set(ratios) == {"float32", "float32, torch Muon", "bfloat16 autocast"}
    assert ratios["float32"] == 1.0 and all(r > 0 for r in ratios.values())  # each timed against float32
    written = json.loads((tmp_path / "step.json").read_text())["settings"]
    assert {name: row["ratio_to_float32"] for name, row in written.items()} == ratios  # the file is the table


def test_label_cost_smallest(tmp_path):
    run_bench("label_cost", "--problems", "1", "--k", "2", "--omegaprm-budget", "4", "--out", str(tmp_path / "c.json"))
    record = json.loads((tmp_path / "c.json").read_text())
    assert (record["problems"], record["k"]) == (1, 2)
    for method in ("math_shepherd", "omegaprm"):
        labels = record[method]
        assert labels["labels_checked"] == labels["steps"] >= labels["measured_checked"] == labels["measured_steps"]
        assert 0.0 <= labels["agree"] <= 1.0


def test_greedy_levels_smallest(tmp_path):
    run_bench("greedy_levels", "--problems", "7", "--out", str(tmp_path / "greedy.json"))
    record = json.loads((tmp_path / "greedy.json").read_text())
    for model in ("policy", "verifier"):
        graded = record["models"][model]
        assert set(graded["by_level"]) == {str(level) for level in range(2, 9)}  # the split cycles levels 2..8
        assert graded["accuracy"] == round(sum(graded["by_level"].values()) / 7, 4)  # one problem per level


def test_adaptive_replay_smallest(tmp_path):
    cache = tmp_path / "samples.json"
    out = run_bench("adaptive_replay", "--limit", "1", "--samples", str(cache))
    [row] = json.loads(cache.read_text()).values()
    assert len(row["samples"]) == 16 and all(s["tokens"] > 0 for s in row["samples"])
    rates = {line.split(" | ")[1]: line.split(" | ")[2:4] for line in out.splitlines()
             if line.startswith("| prm_min_max |")}
    assert rates["n=16"][1] == "1.00x |"
    # the oracle answers right whenever any wave does, n=16's answer included
    assert float(rates["oracle"][0].rstrip("%")) >= float(rates["n=16"][0].rstrip("%"))
    assert run_bench("adaptive_replay", "--samples", str(cache)).endswith(out.split("\n", 1)[1])  # replays the cache


def test_bad_input_against_the_default_server(tmp_path):
    # the README's command, against `openr serve` on its default model (no API key, as there)
    with ServerProcess(["--engine", "hf"], api_key=None) as server:
        out = run_bench("bad_input", "--base-url", server.base_url, "--model", "openr-arith",
                        "--out", str(tmp_path / "bad.json"))
    summary = json.loads((tmp_path / "bad.json").read_text())
    assert summary["cases"] >= 50 and len(summary["results"]) == summary["cases"]
    assert summary["server_errors"] == summary["accepted_but_due_refusal"] == summary["follow_ups_failed"] == []
    assert '"other_4xx_than_due": []' in out


def test_rl_signal_smallest(tmp_path):
    out_file = tmp_path / "rl_signal.json"
    run_bench("rl_signal", "--batches", "16", "--rounds", "2", "--out", str(out_file), "--no-progress")
    result = json.loads(out_file.read_text())
    (row,) = result["settings"]
    assert row["samples_per_round"] == 16 and row["samples"] == 2 * 16
    cosines = row["cosine"]["per_round"]
    assert len(cosines) == 2 and all(-1.0 <= c <= 1.0 for c in cosines)
    assert 0.0 <= row["zero_advantage_share"] <= 1.0


def test_rl_accepted_smallest(tmp_path):
    out_file = tmp_path / "rl_accepted.json"
    run_bench("rl_accepted", "--questions", "4", "--samples", "2", "--temperatures", "1.0", "--out", str(out_file))
    (row,) = json.loads(out_file.read_text())["rows"]
    assert row["samples"] == 8 and 0 <= row["correct_with_a_wrong_step"] <= row["correct"] <= 8


def test_a_right_answer_through_cancelling_slips_has_a_wrong_step():
    from bench.rl_accepted import has_wrong_step

    assert has_wrong_step("3 + 4 = 8\n\n8 - 1 = 6\n\nThe answer is \\boxed{6}")  # 3 + 4 - 1 is 6, by two slips
    assert not has_wrong_step("3 + 4 = 7\n\n7 - 1 = 6\n\nThe answer is \\boxed{6}")
