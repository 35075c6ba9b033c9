"""The n=256 speed and memory figures and the reasoning_effort high decision
that docs quote are their result files' (issue 27)."""

from __future__ import annotations

import json
import re

from openr.search.auto import DEFAULT_EFFORT_TOKENS, DEFAULT_TABLE, effort_preset
from tests.unit.test_doc_numbers import BENCH_RESULTS, EVAL, eval_table, pct, result, row, text


def flat(path: str) -> str:
    return " ".join(text(path).split())


def figure(path: str, name_start: str) -> dict:
    return next(f for f in result(BENCH_RESULTS / path)["figures"] if f["name"].startswith(name_start))


def test_figure_5_and_the_servers_memory_at_n256_are_quoted_from_their_files():
    doc, bench = flat("docs/eval/README.md"), flat("bench/README.md")
    latency = figure("search_bench_n256.json", "5.")
    assert latency["value"] <= 1.5 and f"**{latency['value']:.2f}x** best-of-256's p50" in doc
    beam, best = (float(x) for x in re.search(r"p50 ([\d.]+) vs ([\d.]+) s", latency["detail"]).groups())
    assert f"**{latency['value']:.2f}×** ({beam:.1f} vs {best:.1f} s)" in bench
    assert f"({beam:.1f} against {best:.1f} s, 32 searches a side" in doc
    table = text("bench/README.md").split("## `search_bench.py` at n=256")[1]
    for path, number in (("search_bench_n256_fig1.json", "1"), ("search_bench_n256_fig1.json", "3"),
                         ("search_bench_n256.json", "5")):
        cell = row(table, f"| {number}. ")[1]
        assert cell.lstrip("*").startswith(f"{figure(path, number + '.')['value']:.2f}"), number
    memory = result(BENCH_RESULTS / "server_memory_n256.json")
    rss = memory["rss_mib"]
    assert (memory["searches"], memory["search"]["n"], memory["search"]["strategy"]) == (16, 256, "beam_search")
    assert f"held {rss['before']:.0f} MiB resident idle, **{rss['peak_high_water']:.0f} MiB at its peak**" in doc
    assert f"and {rss['after']:.0f} MiB after they ended" in doc
    assert f"{rss['before']:.0f} MiB idle, {rss['peak_high_water']:.0f} MiB at the peak, {rss['after']:.0f} MiB " \
           "after" in bench
    assert f"({memory['mean_completion_tokens']:,.0f} tokens each, p50 {memory['latency_s']['p50']:.1f} s)" in doc


def test_reasoning_effort_high_is_the_setting_validation_chose():
    n64, n16 = eval_table("openr-arith-val-large-n/beam-bw4-t0.8"), eval_table("openr-arith-val")
    large, small = n64["beam_search-n64-bw4"], n16["beam_search-n16-bw4"]
    assert (large["N"], small["N"]) == ("200", "200") and (large["accuracy"], small["accuracy"]) == ("78.5%", "71.0%")
    rows = {}
    for folder, setting in (("openr-arith-val-large-n/beam-bw4-t0.8", "beam_search-n64-bw4"),
                            ("openr-arith-val", "beam_search-n16-bw4")):
        lines = (EVAL / folder / "results.jsonl").read_text().splitlines()
        rows[setting] = {r["problem_id"]: r["correct"] for r in map(json.loads, lines) if r["setting"] == setting}
    first = [json.loads(line) for line in
             (EVAL / "openr-arith-val-large-n/beam-bw4-t0.8/results.jsonl").read_text().splitlines()[:40]]
    quoted = row(text("docs/eval/README.md"), "| `beam-bw4-t0.8/` (its first 40 rows")
    assert quoted[3:] == [pct(sum(r["correct"] for r in first) / 40)] * 2 + \
        [f"{sum(r['completion_tokens'] for r in first) / 40:.1f}"]
    big, base = rows["beam_search-n64-bw4"], rows["beam_search-n16-bw4"]
    assert set(big) == set(base)
    only_big, only_base = sum(big[p] and not base[p] for p in big), sum(base[p] and not big[p] for p in big)
    assert f"{only_big} problems right only at n=64 and {only_base} only at n=16" in flat("docs/eval/README.md")
    assert effort_preset("high", has_prm=True) == {"strategy": "beam_search", "n": 64, "beam_width": 4}
    assert float(large["mean tokens"]) <= DEFAULT_EFFORT_TOKENS["high"]  # the level affords what it runs
    assert DEFAULT_TABLE.tier_for(2000).options == {"n": 16, "beam_width": 4}


def test_the_refitted_auto_table_reaches_n64_as_docs_eval_says():
    fitted = json.loads((EVAL.parents[1] / "openr" / "models" / "openr-arith" / "auto.json").read_text())
    val = eval_table("openr-arith-val")
    top = fitted["tiers"][-1]
    assert (top["min_tokens"], fitted["effort_tokens"]["high"]) == (8000, DEFAULT_EFFORT_TOKENS["high"])
    affordable = {name: r for name, r in val.items() if float(r["mean tokens"]) <= 8000}
    best = max(affordable, key=lambda name: (float(affordable[name]["accuracy"].rstrip("%")),
                                             -float(affordable[name]["mean tokens"])))
    assert top["fitted"]["setting"] == best == "particle_filtering-n64"
    assert f"particle_filtering n=64 **{val[best]['accuracy']}**" in flat("docs/eval/README.md")
    assert val["beam_search-n64-bw4"]["accuracy"] == "78.5%"  # the same seeds as openr-arith-val-large-n
