"""The ratios, counts and accuracies the docs quote are those of the committed
result files they name (issue 29): a re-run that changes a file, or an edit
that changes a doc, fails here until the other follows. Timings are never
compared (they belong to the machine that ran them); the ratios of timings a
bench measured side by side in one run are, as the file records them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_RESULTS = ROOT / "bench" / "results"
EVAL = ROOT / "docs" / "eval"
CARD = ROOT / "openr" / "models" / "openr-arith"
DOCS_WITH_TABLES = ("bench/README.md", "openr/models/openr-arith/README.md", "docs/eval/README.md")
# Where a table's own figures come from: a file under bench/results/, a summary.json or an eval's table.md
RESULT_FILE = re.compile(r"results/[\w{},./-]*\.json|results/[\w-]+/|summary\.json|table\.md|results\.jsonl")
LINES_AROUND_A_TABLE = 14  # how far above or below a table its result file may be named
WORD_TABLES = ("| script | what it compares |",)  # tables of words, not of figures


def text(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def result(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def row(doc: str, start: str) -> list[str]:
    """The cells of the one table row of `doc` that starts with `start`."""
    [line] = [line for line in doc.splitlines() if line.startswith(start)]
    return [cell.replace("**", "").strip().strip("*") for cell in line.strip("|").split("|")]


def pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def whole(value: float | str) -> str:
    """Rounded half up, as the docs round (Python's round() goes to even: 1522.5 -> 1522)."""
    return str(int(float(value) + 0.5))


def eval_table(folder: str) -> dict[str, dict[str, str]]:
    """An `openr eval` table.md, by setting, by column name."""
    lines = (EVAL / folder / "table.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header, cells)) for cells in
            ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:])}


def tables(doc: str) -> list[tuple[int, str]]:
    """(line index, header) of every table in `doc`."""
    lines = doc.splitlines()
    return [(i, line) for i, line in enumerate(lines)
            if line.startswith("| ") and (i == 0 or not lines[i - 1].startswith("|"))]


@pytest.mark.parametrize("path", DOCS_WITH_TABLES)
def test_every_table_of_figures_names_its_result_file(path):
    doc = text(path)
    lines = doc.splitlines()
    missing = []
    for i, header in tables(doc):
        body = lines[i:next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))]
        if header in WORD_TABLES:
            continue
        end = i + len(body)
        if not RESULT_FILE.search("\n".join(lines[max(0, i - LINES_AROUND_A_TABLE):end + LINES_AROUND_A_TABLE])):
            missing.append(f"line {i + 1}: {header[:60]}")
    assert missing == [], f"{path}: tables that name no result file"


def test_docs_eval_main_table_is_its_table_md():
    doc, table = text("docs/eval/README.md"), eval_table("openr-arith")
    settings = {"| cot (greedy) |": "cot", "| majority_vote n=4 |": "majority_vote-n4",
                "| majority_vote n=16 |": "majority_vote-n16", "| best_of_n n=4 |": "best_of_n-n4",
                "| best_of_n n=16 |": "best_of_n-n16", "| beam_search n=4, width 4 |": "beam_search-n4-bw4",
                "| beam_search n=16, width 4 |": "beam_search-n16-bw4", "| mcts, 8 simulations |": "mcts-sims8"}
    for start, setting in settings.items():
        cells = row(doc, start)
        assert cells[1] == table[setting]["accuracy"], start
        assert cells[2] == whole(table[setting]["mean tokens"]), start


def test_docs_eval_adaptive_and_auto_rows_are_its_table_md():
    doc, table = text("docs/eval/README.md"), eval_table("openr-arith")
    for strategy in ("majority_vote", "best_of_n"):
        setting, full = f"{strategy}-n16-adaptive", f"{strategy}-n16"
        cells, tokens = row(doc, f"| {strategy} n<=16, adaptive |"), float(table[setting]["mean tokens"])
        assert cells[1] == table[setting]["accuracy"]
        assert cells[2] == f"{whole(tokens)} ({tokens / float(table[full]['mean tokens']):.2f}x)"
    for level in ("low", "medium", "high"):
        cells = row(doc, f"| auto {level} |")
        auto = table[f"auto-{level}"]
        assert (cells[1], cells[2]) == (auto["accuracy"], whole(auto["mean tokens"]))


def test_docs_eval_early_stops_are_counted_in_results_jsonl():
    rows = [json.loads(line) for line in (EVAL / "openr-arith" / "results.jsonl").read_text().splitlines()]
    adaptive = [r for r in rows if r["setting"] == "best_of_n-n16-adaptive"]
    confident = [r for r in adaptive if r["stop_reason"] == "confident"]
    right = sum(r["correct"] for r in confident)
    doc = " ".join(text("docs/eval/README.md").split())
    assert f"It stops early on {len(confident)} of {len(adaptive)} problems" in doc
    assert f"and {right} of those {len(confident)} answers ({100 * right / len(confident):.0f}%) are right" in doc


def test_greedy_accuracies_are_greedy_levels_json():
    models = result(BENCH_RESULTS / "greedy_levels.json")["models"]
    verifier_row = row(text("docs/eval/README.md"), "| *the verifier alone, greedy")
    assert verifier_row[1] == pct(models["verifier"]["eval_draw_accuracy"])
    assert row(text("docs/eval/README.md"), "| cot (greedy) |")[1] == pct(models["policy"]["eval_draw_accuracy"])
    policy_row = row(text("openr/models/openr-arith/README.md"), "| policy greedy accuracy, 500 held-out problems |")
    by_level = ", ".join(f"{100 * share:.0f}" for share in models["policy"]["by_level"].values())
    assert policy_row[1] == f"{pct(models['policy']['accuracy'])} (by operations 2..8: {by_level}%)"


def test_card_table_is_summary_json():
    summary, card = result(CARD / "summary.json"), text("openr/models/openr-arith/README.md")
    assert row(card, "| policy greedy accuracy, 500")[1].startswith(pct(summary["greedy_accuracy"]) + " ")
    assert row(card, "| verifier greedy accuracy")[1] == pct(summary["verifier_greedy_accuracy"])
    shepherd, omega = summary["labels"]["math_shepherd"], summary["labels"]["omegaprm"]
    assert row(card, "| Math-Shepherd labels (300 problems")[1] == (f"{shepherd['steps_per_minute']:.0f} labelled "
                                                                  f"steps/min, {shepherd['completions_per_step']} "
                                                                  "completions per step")
    assert row(card, "| OmegaPRM labels (20 problems")[1].startswith(
        f"{omega['steps_per_minute']:.0f} labelled steps/min, {omega['completions_per_step']} completions per written")
    quality, step_tag = summary["prm_quality"], summary["step_tag_prm_quality"]
    assert row(card, "| PRM (this verifier), ProcessBench-style F1")[1] == (
        f"{quality['f1']:.2f} (errors found {100 * quality['error_accuracy']:.0f}%, correct solutions passed "
        f"{100 * quality['correct_accuracy']:.0f}%)")
    assert row(card, "| PRM step AUROC")[1] == f"{quality['step_auroc']:.2f} ({quality['step_auroc']:.4f})"
    assert row(card, "| step-tag PRM on the same labels")[1] == (
        f"F1 {step_tag['f1']:.2f}, AUROC {step_tag['step_auroc']:.2f}")


def test_card_label_cost_table_is_label_cost_json():
    cost, card = result(BENCH_RESULTS / "label_cost.json"), text("openr/models/openr-arith/README.md")
    shepherd, omega = cost["math_shepherd"], cost["omegaprm"]
    assert row(card, "| labels written / measured |")[1:] == [
        f"{m['steps']} / {m['measured_steps']}" for m in (shepherd, omega)]
    assert row(card, "| completions |")[1:] == [f"{m['completions']:,}" for m in (shepherd, omega)]
    assert row(card, "| completions per written label |")[1:] == [
        f"{m['completions_per_step']:.2f}" for m in (shepherd, omega)]
    assert row(card, "| completions per measured label |")[1:] == [
        f"{m['completions_per_measured_label']:.2f}" for m in (shepherd, omega)]
    assert row(card, "| labels that agree with the exact label")[1:] == [
        f"{pct(m['agree'])} / {pct(m['measured_agree'])}" for m in (shepherd, omega)]


def test_train_step_ratios_are_train_step_json():
    settings, doc = result(BENCH_RESULTS / "train_step.json")["settings"], text("bench/README.md")
    for start, name in (("| float32 (default", "float32"), ("| float32, torch's Muon", "float32, torch Muon"),
                        ("| bfloat16 autocast", "bfloat16 autocast")):
        assert row(doc, start)[1] == f"{settings[name]['step_ms']} ({settings[name]['ratio_to_float32']:.2f})"
    card = " ".join(text("openr/models/openr-arith/README.md").split())
    assert f"takes {settings['float32, torch Muon']['ratio_to_float32']:.2f} times as long" in card
    assert f"Muon, {settings['bfloat16 autocast']['ratio_to_float32']:.2f} times" in card


def test_bad_input_counts_are_its_result_files():
    doc = text("bench/README.md")
    for start, name in (("| `openr serve --engine hf`, SmolLM2 |", "bad_input_hf.json"),
                        ("| `openr serve --engine vllm`, SmolLM2 |", "bad_input_vllm.json")):
        found = result(BENCH_RESULTS / name)
        assert row(doc, start)[1:] == [str(found[key]) if key == "cases" else str(len(found[key])) for key in
                                       ("cases", "server_errors", "accepted_but_due_refusal", "follow_ups_failed")]


def test_search_profile_counts_are_its_result_files():
    """Round trips and tokens per search (counts, not timings) of the "now" rows."""
    doc = text("bench/README.md")
    for engine in ("hf", "vllm"):
        rows = {r["setting"].split("-")[0]: r for r in result(BENCH_RESULTS / f"search_profile_{engine}.json")["rows"]}
        for strategy in ("beam_search", "best_of_n"):
            cells = row(doc, f"| {engine}, now | {strategy} |")
            assert cells[-2:] == [f"{rows[strategy]['policy_round_trips']:.1f}", f"{rows[strategy]['tokens']:.0f}"]


def test_serve_overhead_ratios_are_serve_overhead_json():
    rows, doc = result(BENCH_RESULTS / "serve_overhead.json")["rows"], text("bench/README.md")
    assert len(rows) == 4
    for r in rows:
        cells = row(doc, f"| {r['engine']} | {r['batch']} | ")
        assert cells[2:] == [f"{r[key]:.2f}" for key in ("raw_ratio", "server_ratio", "ratio")]
    doc = " ".join(doc.split())
    assert f"(raw: {max(r['raw_ratio'] for r in rows):.2f} at most)" in doc


def test_adaptive_replay_table_is_the_replay_of_its_samples():
    from bench.adaptive_replay import replay, rules
    from openr.search.aggregation import AGGREGATIONS

    samples, doc = result(BENCH_RESULTS / "adaptive_replay_arith.json"), text("bench/README.md")
    doc_rows = {  # a row's start -> (aggregation, the replay's rules in the row's order)
        "| prm_min_max (best_of_n) | n=4": ("prm_min_max", ["n=4", "n=8", "n=16"]),
        "| prm_min_max | adaptive": ("prm_min_max", ["adaptive, confidence 0.95", "adaptive, confidence 0.85"]),
        "| prm_min_max | oracle": ("prm_min_max", ["oracle"]),
        "| prm_min_max | give up": ("prm_min_max", ["give up at 6 below 0.2", "give up at 8 below 0.6"]),
        "| majority_vote | n=4": ("majority_vote", ["n=4", "n=8", "n=16"]),
        "| majority_vote | adaptive": ("majority_vote", ["adaptive, confidence 0.95", "adaptive, confidence 0.85"]),
        "| majority_vote | oracle": ("majority_vote", ["oracle"]),
    }
    for start, (name, names) in doc_rows.items():
        aggregation = AGGREGATIONS[name]
        found = [replay(samples, aggregation, rules(aggregation)[rule]) for rule in names]
        assert row(doc, start)[2:] == [" / ".join(pct(accuracy) for accuracy, _ in found),
                                       " / ".join(f"{tokens:.2f}x" for _, tokens in found)], start


def test_search_bench_figures_are_its_result_files():
    doc = text("bench/README.md")
    # gpu_check's table and the n=256 one have figures of the same names
    doc = doc[doc.index("## `search_bench.py` on openr-arith"):doc.index("## `search_bench.py` at n=256")]
    engines = [name for name in ("hf", "vllm") if (BENCH_RESULTS / f"search_bench_{name}.json").exists()]
    assert "hf" in engines
    columns = {"hf": 1, "vllm": 2}
    for engine in engines:
        figures = {f["name"].split(".")[0]: f for f in result(BENCH_RESULTS / f"search_bench_{engine}.json")["figures"]}
        for number in ("1", "2", "2b", "3", "5"):
            cell = row(doc, f"| {number}. ")[columns[engine]]
            assert cell.startswith(f"{figures[number]['value']:.2f}"), (engine, number)
        if figures["4"]["value"] is not None:
            assert row(doc, "| 4. ")[columns[engine]].startswith(f"{figures['4']['value']:.2f}")
    prose = " ".join(doc.split())
    five = result(BENCH_RESULTS / "search_bench_hf.json")["figures"][-1]["detail"]
    assert "tokens per search 1425 vs 1434" in five and "1425 vs 1434 per search (hf)" in prose
    three = result(BENCH_RESULTS / "search_bench_hf.json")["figures"][3]["detail"]
    assert "PRM tokens per search 9928 vs 982" in three and "9,928 without it" in prose and "982 with it" in prose
    curve = result(BENCH_RESULTS / "search_bench_hf.json")["figures"][2]["data"]["tokens_per_s_by_rows"]
    assert ", ".join(f"{int(v + 0.5):,}" for v in curve.values()) in prose.replace(" and ", ", ")  # 2b's curve


def test_beam_over_best_of_16_latency_is_docs_eval_table_md():
    """A ratio of timings, but of one committed table's two rows, so it is checked like a count."""
    table = eval_table("openr-arith")
    beam, best = (float(table[s]["mean latency (s)"]) for s in ("beam_search-n16-bw4", "best_of_n-n16"))
    assert f"**Where the {beam / best:.1f}x in docs/eval comes from** (beam search n=16's mean latency" in text(
        "bench/README.md")
    assert f"beam search n=16 at {beam / best:.1f}x best-of-16's mean latency here" in " ".join(
        text("docs/eval/README.md").split())


def test_more_sft_control_is_sft_control_json():
    control = result(BENCH_RESULTS / "sft_control.json")
    start, more = control["models"]["start"], control["models"]["more_sft"]
    card, bench = text("openr/models/openr-arith/README.md"), text("bench/README.md")
    claim = f"{pct(start['accuracy'])} → {pct(more['accuracy'])}"
    assert f"**{claim}**" in card and claim in bench
    levels = ", ".join(whole(100 * more["by_level"][level]) for level in sorted(more["by_level"], key=int))
    assert f"(levels 2-8: {levels}%)" in card
    assert f"{control['gold_solutions']:,} more gold" in card


def test_docs_eval_large_n_table_is_its_table_md():
    doc = text("docs/eval/README.md").split("(`openr-arith-large-n/`, issue 27)")[1].split("\n## ")[0]
    table = eval_table("openr-arith-large-n")
    for name, cells in table.items():
        quoted = row(doc, f"| {name} |")
        assert quoted[1:] == [cells["accuracy"], cells["pass@n (ceiling)"], cells["mean tokens"],
                              cells["mean latency (s)"]], name


def test_card_process_reward_run_is_rl_prm():
    card = " ".join(text("openr/models/openr-arith/README.md").split())
    report = (BENCH_RESULTS / "rl_prm" / "table.md").read_text()
    [signal] = re.findall(r"\| (-?\d\.\d{3} \+- \d\.\d{3}) \|", report)
    assert f"Its gradient signal is {signal} over" in card
    evals = result(BENCH_RESULTS / "rl_prm" / "runs" / "grpo-p" / "evals.json")
    curve = " → ".join(f"{100 * e['accuracy']:.1f}" for e in evals)
    assert f"Validation: {curve}% (rounds 0 to {evals[-1]['iteration']}" in card


def test_card_rl_on_more_sft_is_rl_sft_more_and_its_control():
    card = " ".join(text("openr/models/openr-arith/README.md").split())
    test = result(BENCH_RESULTS / "rl_sft_more" / "test.json")
    start, chosen = test["start"], test["chosen"]
    runs = [chosen[name] for name in ("grpo-s", "grpo-s2")]
    assert {pct(run["accuracy"]) for run in runs} == {"75.6%"}  # the card quotes one figure for both
    assert f"**{pct(runs[0]['accuracy'])} against their start's {pct(start['accuracy'])}**" in card
    pairs = " and ".join(f"{r['right_only_chosen']} / {r['right_only_start']}" for r in runs)
    assert f"({pairs} problems right only after" in card
    assert f"p = {runs[0]['sign_test_p']:.2f} and {runs[1]['sign_test_p']:.2f}" in card
    control = result(BENCH_RESULTS / "sft_control_on_more_sft.json")
    models = control["models"]
    assert f"**{pct(models['start']['accuracy'])} → {pct(models['more_sft']['accuracy'])}**" in card
    assert f"in {control['train']['minutes']:.1f} minutes" in card


def test_card_expert_iteration_is_rl_ei():
    card = " ".join(text("openr/models/openr-arith/README.md").split())
    evals = {name: result(BENCH_RESULTS / "rl_ei" / "runs" / name / "evals.json") for name in ("ei-o", "ei-p")}
    assert f"fell from {pct(evals['ei-o'][0]['accuracy'])} to {pct(evals['ei-o'][-1]['accuracy'])}" in card
    assert f"to {pct(evals['ei-p'][-1]['accuracy'])}, level 2 from" in card


def test_docs_eval_n256_curve_is_bench_eval_curve_of_the_two_runs():
    """curve/table.md is what bench.eval_curve makes of the committed rows, and the
    doc's table quotes it, budget by budget."""
    from bench.eval_curve import curve
    from openr.evaluation.report import format_table

    summaries, problems = curve([EVAL / "openr-arith-large-n", EVAL / "openr-arith-n256"])
    assert len(problems) == 100
    assert format_table(summaries) == (EVAL / "openr-arith-n256" / "curve" / "table.md").read_text()
    strategies = list(dict.fromkeys(s.strategy for s in summaries))
    doc = text("docs/eval/README.md").split("(`openr-arith-n256/`, issue 27)")[1].split("\n## ")[0]
    table = eval_table("openr-arith-n256/curve")
    for strategy in strategies:
        names = {int(cells["budget"]): name for name, cells in table.items() if cells["strategy"] == strategy}
        quoted = row(doc, f"| {strategy} ")
        assert quoted[1:5] == [table[names[n]]["accuracy"] for n in (4, 16, 64, 256)], strategy
        assert quoted[5:] == [table[names[256]]["pass@n (ceiling)"], table[names[256]]["mean tokens"]], strategy


def test_card_expert_iteration_data_control_is_rl_rft_control():
    card = text("openr/models/openr-arith/README.md")
    flat = " ".join(card.split())
    control = result(BENCH_RESULTS / "rl_rft_control.json")
    sampling, models = control["sampling"], control["models"]
    assert f"{sampling['questions']} RL training questions x {sampling['group_size']} samples" in flat
    assert f"{sampling['correct']:,} right, **{sampling['accepted']} distinct right solutions on " \
           f"{sampling['questions_solved']} questions**" in flat
    assert f"took {sampling['minutes']} minutes" in flat
    assert pct(models["start"]["accuracy"]) == "39.2%" and "(start 39.2%)" in flat
    for arm in ("own", "gold_same", "gold_all"):
        quoted = row(card, f"| {arm} ")
        assert quoted[1:] == [pct(models[f"{arm} lr={lr} steps=75"]["accuracy"]) for lr in ("0.001", "0.0001")], arm
    history = [json.loads(line) for line in
               (BENCH_RESULTS / "rl_ei_muon" / "runs" / "ei-m" / "history.jsonl").read_text().splitlines()]
    accuracies = " and ".join(pct(h["held_out_accuracy"]) for h in history)
    assert f"answered {accuracies} after rounds 1 and 2 ({history[-1]['samples']:,} samples)" in flat
    cosine = [json.loads(line) for line in
              (BENCH_RESULTS / "rl_ei_cosine" / "runs" / "ei-c" / "history.jsonl").read_text().splitlines()]
    accuracies = " and ".join(pct(h["held_out_accuracy"]) for h in cosine)
    assert f"It answered {accuracies} after rounds 1 and 2 ({cosine[-1]['samples']:,} samples, " \
           f"{cosine[-1]['minutes']:.1f} minutes" in flat
    config = json.loads((BENCH_RESULTS / "rl_ei_cosine" / "runs" / "ei-c" / "rl_config.json").read_text())
    assert config["round_schedule"] == "cosine" and config["learning_rate"] == 1e-4
    big = json.loads((BENCH_RESULTS / "rl_ei_big" / "runs" / "ei-big" / "history.jsonl").read_text().splitlines()[0])
    assert f"kept **{big['accepted']:,} distinct right solutions** of {big['samples']:,} samples" in flat
    assert f"{big['minutes']:.1f} minutes" in flat and f"arith-val **39.2% → {pct(big['held_out_accuracy'])}**" in flat
    assert f"(next-token loss {big['nll']:.3f} a token)" in flat
    expert = result(BENCH_RESULTS / "rl_search_expert.json")
    assert f"**{expert['expert']['right']} right**, where greedy answers {expert['expert']['greedy_right']}" in flat
    counts = {"search": f"all {expert['expert']['right']:,} right", "search_greedy_wrong":
              f"the {expert['expert']['right_where_greedy_wrong']:,}"}
    for arm in ("search", "search_greedy_wrong"):
        quoted = row(card, f"| {arm} ({counts[arm]})")
        assert quoted[1:] == [pct(expert["models"][f"{arm} lr={lr} steps={n}"]["accuracy"])
                              for lr, n in (("0.0001", 75), ("0.001", 150))], arm
