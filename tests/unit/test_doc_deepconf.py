"""docs/eval's DeepConf section quotes its committed files (issue 30): the test
rows are `openr-arith-deepconf/table.md` and its paired counts `results.jsonl`,
the validation rows `bench/results/deepconf_replay_arith_val.json`, and the
bundle's search.json holds the rule chosen again from it within the goal's
token budget (`deepconf_replay_arith_val_budget.json`)."""

from __future__ import annotations

import json
from collections import defaultdict
from math import comb
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "docs" / "eval" / "openr-arith-deepconf"
REPLAY = ROOT / "bench" / "results" / "deepconf_replay_arith_val.json"
BUDGET = ROOT / "bench" / "results" / "deepconf_replay_arith_val_budget.json"
DOC = (ROOT / "docs" / "eval" / "README.md").read_text(encoding="utf-8")
SETTINGS = ("majority_vote-n16", "majority_vote-n16-adaptive", "deepconf-n16-offline", "deepconf-n16")
BASELINE = "majority_vote-n16"


def row(start: str) -> list[str]:
    """The cells of the one row of the DeepConf section's tables that starts with `start`."""
    section = DOC.split("## DeepConf without a PRM")[1].split("\n## ")[0].split("**The second rule")[0]
    [line] = [line for line in section.splitlines() if line.startswith("| " + start)]
    return [cell.replace("**", "").strip() for cell in line.strip("|").split("|")]


def table_md() -> dict[str, dict[str, str]]:
    lines = (RUN / "table.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header, cells)) for cells in
            ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:])}


def correct_by_problem() -> dict[str, dict[str, bool]]:
    rows = defaultdict(dict)
    for line in (RUN / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        rows[record["setting"]][record["problem_id"]] = record["correct"]
    return rows


def test_the_test_rows_are_table_md_and_the_ratios_its_tokens():
    table = table_md()
    base_tokens = float(table[BASELINE]["mean tokens"])
    for setting in SETTINGS:
        _, accuracy, tokens, ratio, latency, _ = row(setting + " |")
        figures = table[setting]
        assert (accuracy, latency) == (figures["accuracy"], figures["mean latency (s)"])
        assert tokens == str(int(float(figures["mean tokens"]) + 0.5))
        assert ratio == f"{float(figures['mean tokens']) / base_tokens:.2f}x"
        assert figures["N"] == "200" and figures["errors"] == "0"


def test_the_paired_counts_and_mcnemar_p_are_results_jsonl():
    correct = correct_by_problem()
    base = correct[BASELINE]
    for setting in SETTINGS[1:]:
        gained = sum(correct[setting][p] and not base[p] for p in base)
        lost = sum(base[p] and not correct[setting][p] for p in base)
        assert row(setting + " |")[-1] == f"{gained} / {lost}"
    online = correct["deepconf-n16"]
    gained, lost = (sum(online[p] and not base[p] for p in base), sum(base[p] and not online[p] for p in base))
    p = 2 * sum(comb(gained + lost, i) for i in range(min(gained, lost) + 1)) / 2 ** (gained + lost)
    assert f"McNemar's exact two-sided p = {p:.2f}" in " ".join(DOC.split())
    assert (gained, lost) == (4, 9) and "(9 lost, 4 gained)" in DOC


def test_the_goal_verdict_follows_from_the_table():
    table = table_md()
    drop = float(table[BASELINE]["accuracy"].rstrip("%")) - float(table["deepconf-n16"]["accuracy"].rstrip("%"))
    ratio = float(table["deepconf-n16"]["mean tokens"]) / float(table[BASELINE]["mean tokens"])
    met = drop <= 2.0 and ratio <= 0.6
    assert ("**The goal is not met.**" in DOC) == (not met)


def test_the_validation_rows_are_the_replay_file_and_search_json_holds_its_choice():
    replay = json.loads(REPLAY.read_text())
    rules = replay["rules"]
    quoted = {"replayed majority_vote n=16 |": "majority_vote n=16",
              "replayed majority_vote n<=16, adaptive |": "majority_vote n=16 adaptive",
              "replayed deepconf offline, keep 30% by min_logprob |": "deepconf offline keep 30% measure=min_logprob",
              "replayed deepconf online, the chosen rule |": replay["chosen"]}
    for start, name in quoted.items():
        _, accuracy, ratio, calls = row(start)
        rule = rules[name]
        assert accuracy == f"{100 * rule['accuracy']:.1f}%" and calls == f"{rule['mean_engine_calls']:.2f}"
        assert ratio.split()[0] == f"{rule['tokens_against_majority_16']:.2f}x"
    assert replay["dataset"] == "arith-val" and replay["problems"] == 200



def test_search_json_holds_the_rule_chosen_within_the_goals_token_budget():
    replay = json.loads(REPLAY.read_text())
    budget = json.loads(BUDGET.read_text())
    assert budget["rules"] == replay["rules"] and budget["token_budget"] == 0.6  # chosen again, same figures
    rule = budget["rules"][budget["chosen"]]
    assert rule["tokens_against_majority_16"] <= 0.6
    assert all(r["accuracy"] <= rule["accuracy"] for n, r in budget["rules"].items()
               if n.startswith("deepconf online") and r["tokens_against_majority_16"] <= 0.6)
    bundle = json.loads((ROOT / "openr" / "models" / "openr-arith" / "search.json").read_text())
    [tier] = bundle["strategies"]["deepconf"]
    chosen = {k: v for k, v in rule["options"].items() if k != "window"}  # min_logprob has none
    assert tier == {"min_n": 16, "options": chosen}


SECOND = ROOT / "docs" / "eval" / "openr-arith-deepconf-budget"


def test_the_second_rules_test_rows_paired_counts_and_verdict_are_its_files():
    section = DOC.split("**The second rule meets the goal**")[1].split("\n## ")[0]
    lines = (SECOND / "table.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table = {cells[0]: dict(zip(header, cells)) for cells in
             ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:])}
    base, online = table[BASELINE], table["deepconf-n16"]
    correct = defaultdict(dict)
    for line in (SECOND / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        correct[record["setting"]][record["problem_id"]] = record["correct"]
    gained = sum(correct["deepconf-n16"][p] and not correct[BASELINE][p] for p in correct[BASELINE])
    lost = sum(correct[BASELINE][p] and not correct["deepconf-n16"][p] for p in correct[BASELINE])
    ratio = float(online["mean tokens"]) / float(base["mean tokens"])
    drop = float(base["accuracy"].rstrip("%")) - float(online["accuracy"].rstrip("%"))
    for name, figures, paired in ((BASELINE, base, "-"), ("deepconf-n16", online, f"{gained} / {lost}")):
        [line] = [line for line in section.splitlines() if line.startswith(f"| {name} |")]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1:3] == [figures["accuracy"], str(int(float(figures["mean tokens"]) + 0.5))]
        assert cells[4:] == [figures["mean latency (s)"], paired] and figures["N"] == "200"
    assert f"{ratio:.2f}x" in section and (drop <= 2.0 and ratio <= 0.6)
    p = min(1.0, 2 * sum(comb(gained + lost, i) for i in range(min(gained, lost) + 1)) / 2 ** (gained + lost))
    assert f"p = {p:.2f} for this pair" in " ".join(section.split())
    served = json.loads((SECOND / "run.json").read_text())["servers"][0]["settings"]["search"]["search_defaults"]
    bundle = json.loads((ROOT / "openr" / "models" / "openr-arith" / "search.json").read_text())
    assert served["strategies"]["deepconf"] == bundle["strategies"]["deepconf"]  # the rule run is the shipped one
