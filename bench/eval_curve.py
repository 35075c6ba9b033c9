"""One scaling curve from several `openr eval` folders, on the problems they share.

A budget too dear for every problem (n=256: about 24,500 tokens a problem and
strategy) runs on fewer problems, in a folder of its own with its own time
budget; `openr eval` keeps such runs apart (its run.json refuses to mix them).
This puts them back on one curve: the rows of every folder, kept only for the
problems that every folder answered for every one of its settings, summarised
and plotted as `openr eval` does (the same table columns, accuracy against
tokens on a log axis, one line per strategy), into `--out`.

    python -m bench.eval_curve docs/eval/openr-arith-large-n docs/eval/openr-arith-n256 \\
        --out docs/eval/openr-arith-n256/curve
"""

from __future__ import annotations

import argparse
from pathlib import Path

from openr.evaluation.answers import RESULTS_FILE, RUN_FILE, read_rows, recorded_settings
from openr.evaluation.report import PLOT_FILE, TABLE_FILE, summarize, write_plot, write_table


def shared_rows(folders: list[Path]) -> tuple[list[dict], list, set[str]]:
    """Every folder's rows on the problems all of them answered for all their
    settings, the settings in folder order, and those problems."""
    rows, settings, problems = [], [], None
    for folder in folders:
        if not (folder / RUN_FILE).is_file():
            raise SystemExit(f"{folder} is not an openr eval --out folder: it has no {RUN_FILE}")
        mine, recorded = read_rows(folder / RESULTS_FILE), recorded_settings(folder)
        answered = {p for p, _ in mine if all((p, s.name) in mine for s in recorded)}
        problems = answered if problems is None else problems & answered
        rows += list(mine.values())
        settings += [s for s in recorded if s.name not in {t.name for t in settings}]
    if not problems:
        raise SystemExit("the folders share no problem answered in every setting")
    return [row for row in rows if row["problem_id"] in problems], settings, problems


def curve(folders: list[Path]) -> tuple[list, set[str]]:
    """The summaries of the shared rows, strategy by strategy (in the order the
    folders' grids first list them), budgets ascending; and the shared problems."""
    rows, settings, problems = shared_rows(folders)
    strategies = list(dict.fromkeys(s.strategy for s in settings))
    order = sorted(settings, key=lambda s: (strategies.index(s.strategy),
                                            s.budget if isinstance(s.budget, int) else 0))
    return summarize(rows, order), problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="openr eval --out folders (results.jsonl, run.json)")
    parser.add_argument("--out", type=Path, required=True, help=f"folder for {TABLE_FILE} and {PLOT_FILE}")
    args = parser.parse_args(argv)
    summaries, problems = curve(args.folders)
    args.out.mkdir(parents=True, exist_ok=True)
    print(write_table(summaries, args.out / TABLE_FILE))
    write_plot(summaries, args.out / PLOT_FILE, f"{len(problems)} problems shared by "
               f"{', '.join(folder.name for folder in args.folders)}")
    print(f"{len(problems)} problems; wrote {args.out / TABLE_FILE} and {args.out / PLOT_FILE}")


if __name__ == "__main__":
    main()
