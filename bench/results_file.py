"""A bench's result file: its figures beside the command that wrote them, the
machine it ran on and the date, so that every figure a doc quotes can be traced
to a committed file in `bench/results/` and checked against it (issue 29)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from openr.hardware import machine_info


def add_result_flags(parser: argparse.ArgumentParser) -> None:
    """The two flags every bench that writes a result file takes."""
    parser.add_argument("--out", type=Path, default=None,
                        help="write the figures, the command, the machine and the date to this JSON file "
                             "(bench/results/NAME.json for a committed result)")
    parser.add_argument("--note", default="",
                        help="what the machine was doing besides, recorded in the file "
                             "(e.g. 'shared CPU: another job on one of the 2 cores')")


def write_result(path: Path | None, module: str, argv: list[str] | None, note: str, figures: dict) -> dict:
    """The record of one run (written to `path` when one is given): the command as typed
    from the repository root, the date, the machine (CPU facts and the load averages
    at the end of the run, which show other work on it), the caller's note, and its figures."""
    args = sys.argv[1:] if argv is None else argv
    record = {"command": shlex.join(["python", "-m", f"bench.{module}", *args]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {**machine_info(), "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]},
              "note": note, **figures}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
