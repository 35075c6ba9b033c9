"""Issue #25's behaviour check: the same `openr eval` before and after the
re-layout, at --concurrency 1 (the hf engine's sampling is bit-exact only when
requests batch the same way). Prints how many problem x setting answers match.

    python docs/eval/openr-arith-house-check/compare.py
"""

import json
from pathlib import Path

HERE = Path(__file__).parent


def rows(side: str) -> dict:
    lines = (HERE / side / "results.jsonl").read_text().splitlines()
    return {(r["problem_id"], r["setting"]): r for r in map(json.loads, lines)}


before, after = rows("before"), rows("after")
assert before.keys() == after.keys()
for setting in sorted({s for _, s in before}):
    keys = [k for k in before if k[1] == setting]
    same = sum(before[k]["answer"] == after[k]["answer"] for k in keys)
    accuracy = [sum(side[k]["correct"] for k in keys) / len(keys) for side in (before, after)]
    print(f"{setting}: {same}/{len(keys)} identical answers; accuracy {accuracy[0]:.1%} -> {accuracy[1]:.1%}")
