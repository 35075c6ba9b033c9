"""`openr eval` end to end: a tiny sweep against a real `openr serve` of a
freshly trained bundle, then a resume with nothing left to ask."""

from __future__ import annotations

import json

import pytest

from openr.evaluation import commands
from tests.support.e2e_helpers import PNG_SIGNATURE
from tests.support.servers import API_KEY, ServerProcess


@pytest.fixture(scope="module")
def bundle_server(tiny_bundle):
    out, _ = tiny_bundle
    with ServerProcess(["--engine", "hf", "--model", str(out)]) as server:
        yield server


@pytest.mark.e2e
def test_tiny_sweep_against_a_real_server_then_resumes_with_nothing_to_ask(bundle_server, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--base-url", bundle_server.base_url, "--api-key", API_KEY, "--dataset", "arith", "--limit", "3",
            "--strategies", "cot", "majority_vote", "best_of_n", "--n", "2", "--max-steps", "3",
            "--max-step-tokens", "12", "--concurrency", "4", "--out", str(out), "--no-progress"]
    summaries = commands.main(argv)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 3 and all(row["error"] is None for row in rows), rows
    assert all(row["completion_tokens"] >= row["reasoning_tokens"] >= 0 for row in rows)
    assert all(row["reasoning_tokens"] > 0 for row in rows if row["budget"] == 2)  # the sample not chosen
    assert all(row["finish_reason"] in ("stop", "length") and isinstance(row["final_answer"], bool) for row in rows)
    assert all(row["final_answer"] for row in rows if row["correct"])  # graded only on a stated answer
    assert {row["stop_reason"] for row in rows} <= {None, "tokens", "time", "prm_calls", "context", "confident"}
    voted = [row for row in rows if row["strategy"] != "cot"]  # each answer is one of the finished candidates
    assert all(isinstance(row["ceiling"], bool) and row["ceiling"] >= row["correct"] for row in voted), voted
    run = json.loads((out / "run.json").read_text())
    assert run["budgets"]["timeout_s"] == 600.0 and run["grading"] == "final answer only"
    [server] = run["servers"]  # what answered, as the server's /version reports it
    assert (server["engine"], server["device"], server["dtype"]) == ("hf", "cpu", "float32")
    assert server["machine"]["cpu"] and server["settings"]["search"]["max_timeout_s"] == 600.0
    assert [(s.setting, s.n) for s in summaries] == [("cot", 3), ("majority_vote-n2", 3), ("best_of_n-n2", 3)]
    assert "| best_of_n-n2 | best_of_n | 2 |" in (out / "table.md").read_text()
    assert (out / "accuracy_vs_tokens.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (out / "command.txt").read_text().startswith("openr eval --base-url")

    capsys.readouterr()
    commands.main(argv)
    assert "nothing to ask: all 9 problem x setting answers are in" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="over this server's largest search time"):  # read from /version
        commands.main(argv[:argv.index("--out")] + ["--out", str(tmp_path / "slow"), "--timeout-s", "9000"])
    with pytest.raises(SystemExit, match="must match"):  # a resumed run with other budgets would mix rows
        commands.main(argv + ["--max-tokens-total", "8"])
    tight = argv[:argv.index("--out")] + ["--out", str(tmp_path / "tight"), "--max-tokens-total", "8",
                                           "--no-progress"]
    commands.main(tight)
    cut = [json.loads(line) for line in (tmp_path / "tight" / "results.jsonl").read_text().splitlines()]
    assert {row["stop_reason"] for row in cut if row["strategy"] != "cot"} == {"tokens"}  # read from the trace
    assert "| majority_vote-n2 |" in (tmp_path / "tight" / "table.md").read_text()
    assert len((out / "results.jsonl").read_text().splitlines()) == 9


@pytest.mark.e2e
def test_auto_particle_filtering_and_adaptive_voting_sweep_and_fit_a_table(bundle_server, tmp_path):
    out, table = tmp_path / "run", tmp_path / "auto.json"
    argv = ["--base-url", bundle_server.base_url, "--api-key", API_KEY, "--dataset", "arith-val", "--limit", "2",
            "--strategies", "majority_vote", "particle_filtering", "auto", "--adaptive", "--n", "2",
            "--max-steps", "3", "--max-step-tokens", "12", "--concurrency", "4", "--fit-auto", str(table),
            "--out", str(out), "--no-progress"]
    summaries = commands.main(argv)
    assert [(s.setting, s.n, s.errors) for s in summaries] == [
        ("majority_vote-n2-adaptive", 2, 0), ("particle_filtering-n2", 2, 0), ("auto-low", 2, 0),
        ("auto-medium", 2, 0), ("auto-high", 2, 0)]
    fitted = json.loads(table.read_text())
    assert fitted["fitted_on"].startswith("arith-val (2 problems")
    assert {tier["strategy"] for tier in fitted["tiers"]} <= {"majority_vote", "particle_filtering"}
