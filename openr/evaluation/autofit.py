"""`openr eval --fit-auto`: fit strategy auto's decision table from a sweep of
fixed strategies on a validation split, and write it as JSON for the model
bundle (`auto.json`, which `openr serve` loads).

For each budget level (the default table's tiers: 0, which is fitted at the
`low` effort's tokens, then 1,000, 2,000 and 8,000), the tier is the fixed
setting with the best validation accuracy among those whose mean generated
tokens fit the level (fewer tokens break ties); a level no setting fits gets
the cheapest.
The threshold at which auto's probe counts as settled stays at its default.
Only settings of one strategy with explicit options count: not auto itself,
nor reasoning_effort presets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from openr.evaluation.report import Summary
from openr.evaluation.settings import EFFORT_STRATEGY, Setting
from openr.search import EFFORTS, SearchConfig
from openr.search.auto import DEFAULT_TABLE, AutoTable

# Options every strategy shares: auto passes its own, so a tier names only the strategy's.
SHARED_OPTIONS = {f.name for f in fields(SearchConfig)}


def fit_auto_table(summaries: Sequence[Summary], settings: Sequence[Setting]) -> dict[str, Any]:
    """The table the summaries of a validation sweep support (see the module
    docstring), in its JSON form, each tier with the validation figures it was chosen by."""
    by_name = {setting.name: setting for setting in settings}
    fixed = [s for s in summaries if s.n and s.strategy not in ("auto", EFFORT_STRATEGY)]
    if not fixed:
        raise ValueError("--fit-auto needs answered settings of fixed strategies (not auto or --reasoning-effort)")
    tiers = []
    for tier in DEFAULT_TABLE.tiers:
        tokens = tier.min_tokens or DEFAULT_TABLE.effort_tokens[EFFORTS[0]]
        affordable = [s for s in fixed if s.mean_tokens <= tokens]
        best = (max(affordable, key=lambda s: (s.accuracy, -s.mean_tokens)) if affordable
                else min(fixed, key=lambda s: s.mean_tokens))
        search = by_name[best.setting].request["search"]
        options = {k: v for k, v in search.items() if k != "strategy" and k not in SHARED_OPTIONS}
        if tiers and (tiers[-1]["strategy"], tiers[-1]["options"]) == (search["strategy"], options):
            continue  # the level below already runs it
        tiers.append({"min_tokens": tier.min_tokens, "strategy": search["strategy"], "options": options,
                      "fitted": {"setting": best.setting, "accuracy": best.accuracy,
                                 "mean_tokens": round(best.mean_tokens, 1), "problems": best.n}})
    return {"effort_tokens": DEFAULT_TABLE.effort_tokens,
            "settled_confidence": DEFAULT_TABLE.settled_confidence, "tiers": tiers}


def write_auto_table(summaries: Sequence[Summary], settings: Sequence[Setting], path: Path,
                     provenance: dict[str, Any]) -> AutoTable:
    """Fit the table and write it to `path` with `provenance` (dataset, command), checked as the server will read it."""
    data = {**provenance, **fit_auto_table(summaries, settings)}
    table = AutoTable.from_json(data, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return table
