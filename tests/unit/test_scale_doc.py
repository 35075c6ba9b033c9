"""docs/scale.md quotes bench/results/affinity.json and affinity_prm.json: the hit
rates, the tokens prefilled per search, the requests each replica got and the
cancellation times are the files', so a re-run or an edit of either fails here
until the other follows."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "scale.md").read_text(encoding="utf-8")
RESULT = json.loads((ROOT / "bench" / "results" / "affinity.json").read_text())


def by_policy() -> dict[str, dict]:
    return {row["policy"]: row for row in RESULT["results"]}


def test_the_hit_rates_and_prefill_per_search_are_the_files():
    for policy, row in by_policy().items():
        line = next(line for line in DOC.splitlines() if line.startswith(f"| {policy}"))
        assert f"| {row['prefix_cache_hit_rate'] * 100:.1f}% |" in line, line
        assert f"| {row['tokens_prefilled_per_search']} |" in line, line
        assert f"| {row['policy_requests_per_search']} |" in line, line
        assert f"{row['prompt_tokens_queried']:,.0f} / {row['prompt_tokens_hit']:,.0f}" in line, line
    hashed, spread = by_policy()["consistent_hash"], by_policy()["round_robin"]
    assert hashed["prefix_cache_hit_rate"] > spread["prefix_cache_hit_rate"]
    saved = 1 - hashed["tokens_prefilled_per_search"] / spread["tokens_prefilled_per_search"]
    assert f"prefilled {saved * 100:.0f}% fewer tokens per search" in DOC


def test_the_requests_per_replica_and_the_cancellation_times_are_the_files():
    for policy, row in by_policy().items():
        counts = sorted(int(replica["request_success_total"]) for replica in row["per_replica"])
        assert f"{counts[0]} and {counts[1]} requests" in DOC or f"{counts[0]} and {counts[1]} with" in DOC, policy
    cancel = by_policy()["consistent_hash"]["cancel"]
    for key in ("drop_at_front_s", "drop_at_router_s"):
        assert ", ".join(f"{s:.2f}" for s in cancel[key]) in DOC, key
    assert f"{cancel['read_to_end_s']:.1f} s ({cancel['max_tokens']} tokens)" in DOC


PRM_RESULT = json.loads((ROOT / "bench" / "results" / "affinity_prm.json").read_text())


def test_the_prm_pool_table_is_the_files():
    rows = {row["policy"]: row for row in PRM_RESULT["results"]}
    section = DOC[DOC.index("### The PRM pool"):]
    for policy, row in rows.items():
        line = next(line for line in section.splitlines() if line.startswith(f"| {policy}"))
        looked = f"| {row['prefix_cache_queries']:,.0f} / {row['prefix_cache_hits']:,.0f} |"
        split = ", ".join(" + ".join(map(str, search)) for search in row["one_search_pooling_requests_per_replica"])
        for cell in (looked, f"| {row['tokens_prefilled_per_search']:,} |", f"| {row['pooling_requests_per_search']} |",
                     f"| {split} |"):
            assert cell in line, (cell, line)
    assert f"({rows['consistent_hash']['prompt_tokens']:,.0f} prompt tokens for" in DOC
    assert rows["consistent_hash"]["prompt_tokens"] == rows["round_robin"]["prompt_tokens"]  # the same searches
    assert PRM_RESULT["machine"]["cpu"] in DOC
