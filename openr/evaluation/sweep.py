"""One evaluation run end to end: pick the model, check OUT holds the same run,
ask what is missing, then rewrite the table and plot from every row OUT holds
for these problems (so settings an earlier command added to OUT stay in them).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
from tqdm.auto import tqdm

from openr.evaluation.answers import (
    RESULTS_FILE,
    Grading,
    dataset_id,
    dataset_label,
    pending_jobs,
    read_rows,
    record_run,
    recorded_settings,
    run_jobs,
    select_problems,
)
from openr.evaluation.autofit import write_auto_table
from openr.evaluation.report import PLOT_FILE, TABLE_FILE, Summary, summarize, write_plot, write_table
from openr.evaluation.settings import Setting, needs_prm
from openr.tasks import Problem

COMMAND_FILE = "command.txt"
# Client-side limit per request; above the server's largest search timeout (600 s).
REQUEST_TIMEOUT_S = 900.0
# The SDK retries connection errors, 429 (the server's queue is full) and 5xx with backoff.
REQUEST_RETRIES = 2
INTERRUPTED_EXIT_CODE = 130  # the shell's code for a Ctrl-C'd command


@dataclass(frozen=True)
class Sweep:
    """Everything one run needs, already validated: the `openr eval` flags in typed form."""

    dataset: str
    limit: int | None
    seed: int
    settings: list[Setting]
    base_url: str
    api_key: str
    model: str | None  # None: the first model the server lists
    concurrency: int
    max_tokens: int | None
    out: Path
    progress: bool
    fit_auto: Path | None = None  # where to write auto's decision table fitted on this sweep
    grading: Grading = Grading()  # budgets sent with every search, and how answers are graded


def run(sweep: Sweep, command: list[str]) -> list[Summary]:
    """Run `sweep`, print its table and return the per-setting summaries; `command` goes to command.txt."""
    problems = select_problems(sweep.dataset, sweep.limit, sweep.seed)
    sweep.out.mkdir(parents=True, exist_ok=True)
    (sweep.out / COMMAND_FILE).write_text(shlex.join(command) + "\n", encoding="utf-8")
    try:
        model = asyncio.run(_ask_missing(sweep, problems))
    except KeyboardInterrupt:
        print(f"\ninterrupted: the answers so far are in {sweep.out / RESULTS_FILE}; run the same command "
              "again to resume", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    rows = read_rows(sweep.out / RESULTS_FILE)
    # The report covers every setting OUT holds (earlier commands' too), over this run's problems.
    asked = {setting.name for setting in sweep.settings}
    reported = [setting for setting in recorded_settings(sweep.out)
                if setting.name in asked or any((problem.id, setting.name) in rows for problem in problems)]
    keys = ((problem.id, setting.name) for problem in problems for setting in reported)
    summaries = summarize([rows[key] for key in keys if key in rows], reported)
    table = write_table(summaries, sweep.out / TABLE_FILE)
    write_plot(summaries, sweep.out / PLOT_FILE,
               title=f"{model} on {dataset_label(sweep.dataset)} ({len(problems)} problems)")
    print(table)
    if sweep.fit_auto is not None:
        provenance = {"fitted_on": f"{dataset_label(sweep.dataset)} ({len(problems)} problems, --seed {sweep.seed})",
                      "model": model, "command": shlex.join(command)}
        try:
            write_auto_table(summaries, reported, sweep.fit_auto, provenance)
        except ValueError as exc:
            raise SystemExit(f"openr eval: --fit-auto: {exc}") from None
        print(f"auto's decision table: {sweep.fit_auto}")
    return summaries


async def _ask_missing(sweep: Sweep, problems: list[Problem]) -> str:
    """Ask every pair without an answer in OUT; returns the model evaluated."""
    client = openai.AsyncOpenAI(base_url=sweep.base_url, api_key=sweep.api_key, timeout=REQUEST_TIMEOUT_S,
                                max_retries=REQUEST_RETRIES)
    async with client:
        model = await _choose_model(client, sweep)
        server = await _server_report(sweep)
        ceiling = server.get("settings", {}).get("search", {}).get("max_timeout_s")
        if ceiling is not None and (sweep.grading.timeout_s or 0) > ceiling:
            raise SystemExit(f"openr eval: --timeout-s {sweep.grading.timeout_s:g} is over this server's largest "
                             f"search time, {ceiling:g} s (openr serve --search-max-timeout); every search "
                             "would be refused")
        try:
            record_run(sweep.out, model, dataset_id(sweep.dataset), sweep.settings, sweep.grading, server=server)
        except ValueError as exc:
            raise SystemExit(f"openr eval: {exc}") from None
        jobs = pending_jobs(problems, sweep.settings, read_rows(sweep.out / RESULTS_FILE))
        total = len(problems) * len(sweep.settings)
        if not jobs:
            print(f"nothing to ask: all {total} problem x setting answers are in {sweep.out}")
            return model
        with tqdm(total=total, initial=total - len(jobs), desc="eval", unit="answer",
                  disable=not sweep.progress) as bar:
            await run_jobs(client, model, jobs, sweep.out / RESULTS_FILE, concurrency=sweep.concurrency,
                           max_tokens=sweep.max_tokens, bar=bar, grading=sweep.grading)
    return model


async def _server_report(sweep: Sweep) -> dict:
    """What the server says about itself at `/version` (`openr serve`: engine, device,
    dtype, machine, settings; vLLM: its version), or why it said nothing."""
    root = sweep.base_url.rstrip("/").removesuffix("/v1")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(f"{root}/version", headers={"Authorization": f"Bearer {sweep.api_key}"})
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"unavailable": f"{root}/version: {type(exc).__name__}: {exc}"}


async def _choose_model(client: openai.AsyncOpenAI, sweep: Sweep) -> str:
    """The model to evaluate, checked against the server's list before any problem is sent.

    A PRM strategy on a model without a PRM would fail every request, so that is refused here.
    """
    try:
        cards = (await client.models.list()).data
    except openai.APIError as exc:
        raise SystemExit(f"openr eval: cannot list the models at {sweep.base_url}: {exc}") from None
    if not cards:
        raise SystemExit(f"openr eval: {sweep.base_url} serves no models")
    names = [card.id for card in cards]
    if sweep.model is not None and sweep.model not in names:
        raise SystemExit(f"openr eval: {sweep.base_url} does not serve {sweep.model!r}; it serves {names}")
    card = cards[names.index(sweep.model)] if sweep.model else cards[0]
    has_prm = bool((card.model_extra or {}).get("prm"))
    without = [setting.name for setting in sweep.settings if needs_prm(setting)] if not has_prm else []
    if without:
        raise SystemExit(f"openr eval: {card.id} has no PRM attached, and {', '.join(without)} need one; leave "
                         "out the PRM strategies (e.g. --strategies cot majority_vote) or pass "
                         "--aggregation majority_vote")
    return card.id
