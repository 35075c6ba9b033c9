"""Ask the server every (problem, setting) pair, grade the answer, append a row.

Rows are appended to results.jsonl as each request finishes, so an interrupted
run loses at most the requests in flight and a rerun asks only for the rest.
Requests run concurrently on asyncio; grading runs on the event loop, i.e. the
main thread, where math-verify's SIGALRM timeout works.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from tqdm.auto import tqdm

from openr.evaluation.settings import ARITH_DATASET, ARITH_DATASETS, Setting
from openr.tasks import Problem, arith, load_problems
from openr.tasks.grading import extract_answer, final_answer, is_correct

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"  # model, dataset and settings the rows in OUT answer

Key = tuple[str, str]  # (problem id, setting name)


@dataclass(frozen=True)
class Job:
    problem: Problem
    setting: Setting


def select_problems(dataset: str, limit: int | None, seed: int) -> list[Problem]:
    """The problems to ask: all of them, or `limit` drawn with `seed` (kept in dataset order).

    The draw is a prefix of one seeded shuffle, so a larger --limit keeps the
    problems of a smaller one and a grown run resumes instead of starting over.
    """
    if dataset in ARITH_DATASETS:
        problems = arith.test_split() if dataset == ARITH_DATASET else arith.validation_split()
    else:
        problems = load_problems(dataset)
    if limit is None or limit >= len(problems):
        return problems
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    return [problems[i] for i in sorted(order[:limit])]


def dataset_id(dataset: str) -> str:
    """What run.json records: two files with the same row ids (GSM8K train/test) must not mix."""
    return dataset if dataset in ARITH_DATASETS else str(Path(dataset).resolve())


def dataset_label(dataset: str) -> str:
    return dataset if dataset in ARITH_DATASETS else Path(dataset).name


@dataclass(frozen=True)
class Grading:
    """How a run asks and grades, the same for every row of OUT: the search
    budgets sent with every search request (None: not sent) and whether an
    answer without a stated final answer may still count (`--lenient`)."""

    timeout_s: float | None = None
    max_tokens_total: int | None = None
    lenient: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"budgets": {"timeout_s": self.timeout_s, "max_tokens_total": self.max_tokens_total},
                "grading": "lenient" if self.lenient else "final answer only"}

    def search_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """`request` with the budgets and a trace (for stop_reason) in its search object."""
        if "search" not in request and "reasoning_effort" not in request:
            return request
        budgets = {k: v for k, v in (("timeout_s", self.timeout_s), ("max_tokens_total", self.max_tokens_total))
                   if v is not None}
        return {**request, "search": {**request.get("search", {}), **budgets, "return_trace": True}}


# What a run.json written before budgets and strict grading were recorded did.
UNRECORDED = {"budgets": {"timeout_s": None, "max_tokens_total": None}, "grading": "lenient"}


def record_run(out: Path, model: str, dataset: str, settings: list[Setting], grading: Grading = Grading(),
               server: dict | None = None) -> None:
    """Write OUT/run.json, refusing to mix rows of another model, dataset, grading,
    budgets or same-named setting; `server` (what its /version reports: machine,
    engine, dtype, settings) joins the list of servers that answered for OUT."""
    path = out / RUN_FILE
    run = json.loads(path.read_text()) if path.exists() else {"model": model, "dataset": dataset, "settings": {},
                                                               **grading.to_json()}
    run = {**UNRECORDED, **run}
    for field, value in (("model", model), ("dataset", dataset), *grading.to_json().items()):
        if run[field] != value:
            raise ValueError(f"{out} holds results for {field} {run[field]!r}, not {value!r} (--timeout-s, "
                             "--max-tokens-total and --lenient must match the run there); use another --out")
    for setting in settings:
        before = run["settings"].setdefault(setting.name, setting.to_json())
        if before != setting.to_json():
            raise ValueError(f"{out} holds results for setting {setting.name} as {before}, "
                             f"not {setting.to_json()}; use another --out")
    if server is not None and server not in run.setdefault("servers", []):
        run["servers"].append(server)
    path.write_text(json.dumps(run, indent=2) + "\n")


def recorded_settings(out: Path) -> list[Setting]:
    """Every setting OUT/run.json holds, in the order runs first asked for them."""
    run = json.loads((out / RUN_FILE).read_text())
    return [Setting(name, s["strategy"], s["budget"], s["request"]) for name, s in run["settings"].items()]


def read_rows(path: Path) -> dict[Key, dict[str, Any]]:
    """The rows in results.jsonl by (problem, setting); a later row replaces an earlier one."""
    rows: dict[Key, dict[str, Any]] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run: that pair is asked again
        rows[(row["problem_id"], row["setting"])] = row
    return rows


def pending_jobs(problems: list[Problem], settings: list[Setting], rows: dict[Key, dict]) -> list[Job]:
    """Pairs without an answer yet, problem by problem so a partial run covers every setting.

    Rows that recorded an error are asked again: the error may have been the server's state.
    So are rows whose search the time budget cut: the machine's load, not the search, shaped
    that answer, and a scaling-law row must not depend on it.
    """
    return [Job(problem, setting) for problem in problems for setting in settings
            if not _answered(rows.get((problem.id, setting.name)))]


async def run_jobs(client: openai.AsyncOpenAI, model: str, jobs: list[Job], results: Path, *,
                   concurrency: int, max_tokens: int | None, bar: tqdm, grading: Grading = Grading()) -> None:
    """Answer `jobs` with at most `concurrency` requests in flight, appending each row as it lands."""
    torn = _ends_mid_line(results)
    with open(results, "a", encoding="utf-8") as out:
        if torn:
            out.write("\n")
        todo = iter(jobs)  # shared by the workers; each takes the next job when its request is done
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for job in todo:
                row = await answer(client, model, job, max_tokens, grading)
                out.write(json.dumps(row) + "\n")
                out.flush()
                if row["error"] is not None:
                    errors += 1
                    bar.set_postfix(errors=errors)
                bar.update()

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)))))


async def answer(client: openai.AsyncOpenAI, model: str, job: Job, max_tokens: int | None,
                 grading: Grading = Grading()) -> dict[str, Any]:
    """One results row; a failed request becomes a row with `error` set, graded incorrect.
    The row says how the answer ended: `finish_reason`, the search's `stop_reason`
    (tokens, prm_calls, time, context, confident; None when it simply finished or
    was no search) and whether it states a final answer."""
    problem, setting = job.problem, job.setting
    row = {"problem_id": problem.id, "setting": setting.name, "strategy": setting.strategy,
           "budget": setting.budget, "answer": None, "extracted": None, "gold": problem.answer, "correct": False,
           "final_answer": False, "finish_reason": None, "stop_reason": None, "ceiling": None,
           "completion_tokens": 0, "reasoning_tokens": 0, "latency_s": 0.0, "error": None}
    limit = {} if max_tokens is None else {"max_completion_tokens": max_tokens}
    start = time.perf_counter()
    try:
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": problem.question}],
            extra_body=grading.search_request(setting.request), **limit)
    except openai.APIError as exc:
        reply, row["error"] = None, _describe(exc)
    row["latency_s"] = round(time.perf_counter() - start, 3)
    if reply is None:
        return row
    text = reply.choices[0].message.content or ""
    usage = reply.usage
    details = usage.completion_tokens_details if usage else None
    trace = (reply.model_extra or {}).get("search_trace") or {}
    row.update(answer=text, extracted=extract_answer(text),
               correct=is_correct(text, problem.answer, lenient=grading.lenient),
               final_answer=final_answer(text) is not None, finish_reason=reply.choices[0].finish_reason,
               stop_reason=trace.get("stop_reason"),
               ceiling=ceiling(trace, problem.answer, grading.lenient),
               completion_tokens=usage.completion_tokens if usage else 0,
               reasoning_tokens=(details.reasoning_tokens or 0) if details else 0)
    return row


def ceiling(trace: dict[str, Any], gold: str, lenient: bool) -> bool | None:
    """Whether any finished candidate of the search is right (pass@n: what a perfect
    pick among its solutions would score); None when the reply has no candidates."""
    candidates = trace.get("candidates") or []
    if not candidates:
        return None
    return any(c.get("finished") and is_correct("\n".join(c.get("steps") or []), gold, lenient=lenient)
               for c in candidates)


def _answered(row: dict[str, Any] | None) -> bool:
    return row is not None and row["error"] is None and row.get("stop_reason") != "time"


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"  # no HTTP answer at all: connection refused, timeout


def _ends_mid_line(path: Path) -> bool:
    """Whether a killed run left the file's last line unfinished (the next row must start afresh)."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"
