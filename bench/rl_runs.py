"""The RL runs of openr-arith side by side: held-out accuracy against samples
and against minutes, from the runs' own files, and the test split graded once
for the runs chosen on validation.

`openr train rl --out RUN ...` writes RUN/history.jsonl (every round's
metrics), its config and state under RUN/rl_state/, and RUN/best/ (the policy
of its best held-out evaluation, with best/held_out.json). Runs are chosen on
arith-val (`--eval-dataset arith-val`); this report copies what each run
wrote into OUT/runs/NAME/ (history, config, evaluations, the chosen round) so
the result files stay when the checkpoints go, and writes:

- OUT/results.json: per run, its config, the `openr train rl` flags that
  differ from the defaults, its evaluations, samples, minutes and chosen round;
- OUT/table.md: one row per run;
- OUT/curves.png: validation accuracy against samples and against minutes.

With `--test NAME...`, the chosen policy of each named run (RUN/best/, or the
starting policy where no round beat it) and the starting policy are graded
greedily on all 500 problems of the arith test split, by level, and compared
pair by pair (problems only one of them gets right; a two-sided sign test):
OUT/test.json and a second table in OUT/table.md. Report the test split once,
for the runs chosen, never to choose among them.

    python -m bench.rl_runs runs/grpo-a runs/grpo-b --out bench/results/rl_runs
    python -m bench.rl_runs runs/grpo-a runs/grpo-b --out bench/results/rl_runs --test grpo-a
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path

from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, POLICY_SUBDIR
from openr.hardware import machine_info
from openr.rl.checkpoint import BEST_DIR, BEST_FILE, CONFIG_FILE, HISTORY_FILE, LATEST, STATE_DIR, SUMMARY_FILE
from openr.rl.commands import COMMAND_FILE
from openr.rl.config import RLConfig

DEFAULT_POLICY = BUILTIN_BUNDLES[ARITH_ALIAS] / POLICY_SUBDIR


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_record(run: Path) -> dict:
    """What one run directory says about itself: config, evaluations, samples,
    minutes and the chosen round (a finished run's summary, else its last save)."""
    summary = _read_json(run / SUMMARY_FILE)
    pointer = run / STATE_DIR / LATEST
    saved = run / STATE_DIR / pointer.read_text().strip() if pointer.exists() else None
    config = _read_json(run / CONFIG_FILE) or (_read_json(saved / CONFIG_FILE) if saved else None)
    if config is None:
        raise ValueError(f"{run} holds no RL run (no {CONFIG_FILE})")
    state = _read_json(saved / "state.json") if saved else None
    history = [json.loads(line) for line in (run / HISTORY_FILE).read_text().splitlines()] \
        if (run / HISTORY_FILE).exists() else []
    # the history is written every round, the state only at saves: take evaluations from both
    evals = {e["iteration"]: (e["accuracy"], e.get("by_level")) for e in (summary or state or {}).get("evals", [])}
    evals.update({m["iteration"]: (m["held_out_accuracy"], m.get("held_out_by_level")) for m in history
                  if "held_out_accuracy" in m})
    best = _read_json(run / BEST_DIR / BEST_FILE)
    if best is None:  # no round beat the start (or the run predates OUT/best/): the start is chosen
        best = {"iteration": 0, "accuracy": evals[0][0] if 0 in evals else None, "samples": 0, "minutes": 0.0}
    last = history[-1] if history else {}
    cosines = [m["gradient_signal"] for m in history if "gradient_signal" in m]
    signal = {"mean": statistics.fmean(cosines), "rounds": len(cosines),
              "standard_error": statistics.stdev(cosines) / math.sqrt(len(cosines)) if len(cosines) > 1 else 0.0} \
        if cosines else None
    defaults = dataclasses.asdict(RLConfig())
    flags = [(f"--{'' if v else 'no-'}{k.replace('_', '-')}" if isinstance(v, bool) else f"--{k.replace('_', '-')} {v}")
             for k, v in config.items() if defaults.get(k) != v]
    command = (run / COMMAND_FILE).read_text().strip() if (run / COMMAND_FILE).exists() else None
    return {"name": run.name, "config": config, "flags": " ".join(flags), "command": command,
            "finished": summary is not None, "gradient_signal": signal,
            "rounds": last.get("iteration", 0), "samples": last.get("samples", 0),
            "minutes": round(last.get("minutes", 0.0), 2),
            "evals": [{"iteration": i, "accuracy": a, "by_level": levels,
                       "samples": next((m["samples"] for m in history if m["iteration"] == i), 0),
                       "minutes": next((round(m["minutes"], 2) for m in history if m["iteration"] == i), 0.0)}
                      for i, (a, levels) in sorted(evals.items())],
            "chosen": best, "history": history}


def copy_run_files(run: Path, out: Path) -> None:
    """The run's small files (history, config, summary, chosen round) into OUT/runs/NAME/."""
    target = out / "runs" / run.name
    target.mkdir(parents=True, exist_ok=True)
    for source, name in [(run / COMMAND_FILE, COMMAND_FILE), (run / HISTORY_FILE, HISTORY_FILE),
                         (run / SUMMARY_FILE, SUMMARY_FILE), (run / BEST_DIR / BEST_FILE, "best_held_out.json")]:
        if source.exists():
            shutil.copyfile(source, target / name)
    pointer = run / STATE_DIR / LATEST
    if pointer.exists():
        saved = run / STATE_DIR / pointer.read_text().strip()
        shutil.copyfile(saved / CONFIG_FILE, target / CONFIG_FILE)
        state = json.loads((saved / "state.json").read_text())
        (target / "evals.json").write_text(json.dumps(state["evals"], indent=2) + "\n")


def run_table(records: list[dict]) -> str:
    lines = ["| run | algo | flags | rounds | samples | minutes | gradient signal | val at start | "
             "best val (round, samples) | last val |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        evals = r["evals"]
        start = evals[0]["accuracy"] if evals and evals[0]["iteration"] == 0 else None
        best = max(evals, key=lambda e: (e["accuracy"], -e["iteration"])) if evals else None
        fmt = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        best_cell = f"{fmt(best['accuracy'])} ({best['iteration']}, {best['samples']:,})" if best else "-"
        last = fmt(evals[-1]["accuracy"] if evals else None)
        signal = r["gradient_signal"]
        signal_cell = f"{signal['mean']:.3f} +- {signal['standard_error']:.3f}" if signal else "-"
        lines.append(f"| {r['name']} | {r['config']['algo']} | `{r['flags']}` | {r['rounds']} | {r['samples']:,} | "
                     f"{r['minutes']:.1f} | {signal_cell} | {fmt(start)} | {best_cell} | {last} |")
    return "\n".join(lines)


def level_table(records: list[dict]) -> str:
    """Validation accuracy per level at the start and at each run's best round (runs that record levels)."""
    rows = []
    for r in records:
        with_levels = [e for e in r["evals"] if e.get("by_level")]
        if not with_levels:
            continue
        best = max(with_levels, key=lambda e: (e["accuracy"], -e["iteration"]))
        shown = [("start", with_levels[0])]
        if best["iteration"]:
            shown.append((f"best, round {best['iteration']}", best))
        if with_levels[-1] is not best and with_levels[-1]["iteration"]:
            shown.append((f"last, round {with_levels[-1]['iteration']}", with_levels[-1]))
        rows += [(r["name"], label, e["by_level"]) for label, e in shown]
    if not rows:
        return ""
    levels = sorted({level for *_, by in rows for level in by}, key=int)
    lines = ["| run | round | " + " | ".join(f"L{lv}" for lv in levels) + " |", "|---|---|" + "---|" * len(levels)]
    lines += [f"| {name} | {label} | " + " | ".join(f"{100 * by[lv]:.0f}" if lv in by else "-" for lv in levels) + " |"
              for name, label, by in rows]
    return "Validation accuracy by level (%):\n\n" + "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_samples, by_minutes) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in records:
        xs = [e["samples"] for e in r["evals"]]
        ys = [100 * e["accuracy"] for e in r["evals"]]
        by_samples.plot(xs, ys, marker="o", label=r["name"])
        by_minutes.plot([e["minutes"] for e in r["evals"]], ys, marker="o", label=r["name"])
    by_samples.set_xlabel("rollout samples")
    by_minutes.set_xlabel("minutes (rollouts, updates and evaluations)")
    by_samples.set_ylabel("greedy accuracy on the held-out set (%)")
    for axis in (by_samples, by_minutes):
        axis.grid(alpha=0.3)
    by_minutes.legend()
    figure.suptitle("RL on openr-arith: held-out accuracy against budget")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def paired(start: list[bool], chosen: list[bool]) -> dict:
    from scipy.stats import binomtest

    gains = sum(1 for a, b in zip(start, chosen) if b and not a)
    losses = sum(1 for a, b in zip(start, chosen) if a and not b)
    p = binomtest(gains, gains + losses).pvalue if gains + losses else 1.0
    return {"right_only_chosen": gains, "right_only_start": losses, "sign_test_p": p}


def test_once(records: list[dict], runs: dict[str, Path], names: list[str], start_policy: Path) -> dict:
    from openr.rl.trainer import accuracy_by_level as by_level
    from openr.tasks import arith
    from openr.training.policy_accuracy import greedy_grades

    problems = arith.test_split()
    start = greedy_grades(start_policy, problems)
    result = {"problems": len(problems), "start": {"policy": str(start_policy), "accuracy": sum(start) / len(start),
                                                   "by_level": by_level(problems, start)}, "chosen": {}}
    for name in names:
        record = next(r for r in records if r["name"] == name)
        best = runs[name] / BEST_DIR
        policy = best if (best / BEST_FILE).exists() else start_policy
        grades = start if policy == start_policy else greedy_grades(policy, problems)
        result["chosen"][name] = {"round": record["chosen"]["iteration"], "val_accuracy": record["chosen"]["accuracy"],
                                  "samples": record["chosen"].get("samples"), "accuracy": sum(grades) / len(grades),
                                  "by_level": by_level(problems, grades), **paired(start, grades),
                                  "grades": [int(g) for g in grades]}
    result["start"]["grades"] = [int(g) for g in start]
    return result


def test_table(test: dict) -> str:
    levels = list(test["start"]["by_level"])
    lines = [f"Test split, all {test['problems']} problems, greedy, graded once for the runs chosen on arith-val:", "",
             "| policy | round (samples) | val | test | " + " | ".join(f"L{lv}" for lv in levels) +
             " | right only here / only start | sign test p |",
             "|---|---|---|---|" + "---|" * len(levels) + "---|---|"]
    start = test["start"]
    lines.append(f"| start | 0 | - | {100 * start['accuracy']:.1f}% | " +
                 " | ".join(f"{100 * start['by_level'][lv]:.0f}" for lv in levels) + " | - | - |")
    for name, c in test["chosen"].items():
        lines.append(f"| {name} | {c['round']} ({c['samples'] or 0:,}) | {100 * c['val_accuracy']:.1f}% | "
                     f"{100 * c['accuracy']:.1f}% | " + " | ".join(f"{100 * c['by_level'][lv]:.0f}" for lv in levels) +
                     f" | {c['right_only_chosen']} / {c['right_only_start']} | {c['sign_test_p']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rl_runs", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (`openr train rl --out`)")
    parser.add_argument("--out", type=Path, required=True, help="report directory")
    parser.add_argument("--test", nargs="*", default=[], metavar="NAME",
                        help="runs (by directory name) whose chosen policy is graded on the arith test split")
    parser.add_argument("--start-policy", type=Path, default=DEFAULT_POLICY,
                        help="the policy the runs started from (graded beside them on the test split)")
    args = parser.parse_args(argv)
    runs = {run.name: run for run in args.runs}
    unknown = sorted(set(args.test) - set(runs))
    if unknown:
        parser.error(f"--test names runs not given: {unknown}")
    try:
        records = [run_record(run) for run in args.runs]
    except (OSError, ValueError) as error:  # not a run directory, or its files unreadable
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        copy_run_files(run, args.out)
    report = {"runs": [{k: v for k, v in r.items() if k != "history"} for r in records], "machine": machine_info()}
    table = "# RL runs on openr-arith\n\nValidation: arith-val (greedy, exact grading).\n\n" + run_table(records)
    if level_table(records):
        table += "\n\n" + level_table(records)
    previous = _read_json(args.out / "test.json")
    if args.test:
        test = test_once(records, runs, args.test, args.start_policy)
        (args.out / "test.json").write_text(json.dumps({**test, "machine": machine_info()}, indent=2) + "\n")
        previous = test
    if previous:
        table += "\n\n" + test_table(previous)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "table.md").write_text(table + "\n")
    plot(records, args.out / "curves.png")
    print(table)


if __name__ == "__main__":
    main()
