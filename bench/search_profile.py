"""Where a loaded search's time goes, strategy by strategy (issue 17).

Beam search under load took 3.2-3.5x best-of-N's latency at the same generated
tokens. Before changing anything, this splits the time of each strategy's
searches into: awaiting the policy, awaiting the PRM (its queue and scoring)
and the rest (the strategy's own work, the event loop), from every search's
trace (`return_trace`); and the policy's part into the engine's queue, prefill
and decode, from the server's `/metrics` (`openr:request_*_time_seconds`,
summed over the strategy's engine requests and divided by its searches).

It starts `openr serve` (or uses the server at --base-url, which nothing else
may use meanwhile: /metrics deltas are the whole server's), sends one warm-up
search per strategy, then per round and strategy in turn fires one search of
each of --problems arith test problems, --in-flight at a time, with the OpenAI
SDK, and reads /metrics before and after. Searches are asked exactly as
`openr eval` asks them (same settings, the server's largest search timeout).
Prints a markdown table and writes every figure (and each search's latency)
to --json.

    OMP_NUM_THREADS=1 python -m bench.search_profile        # hf engine, openr-arith, n=16, width 4, 16 in flight
    python -m bench.search_profile --base-url http://127.0.0.1:8000/v1 --strategies beam_search
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
import openai

from openr.engine.checkpoints import ARITH_ALIAS
from openr.evaluation.answers import Grading
from openr.evaluation.commands import DEFAULT_TIMEOUT_S
from openr.evaluation.settings import Setting, build_grid
from openr.evaluation.sweep import REQUEST_TIMEOUT_S
from openr.search import DEFAULT_BEAM_WIDTH
from openr.server.launcher import ServerProcess
from openr.server.metrics import metric_in
from openr.tasks.arith import test_split

DEFAULT_STRATEGIES = ("beam_search", "best_of_n")
DEFAULT_SAMPLES = 16
DEFAULT_IN_FLIGHT = 16
DEFAULT_PROBLEMS = 32
ENGINE_PHASES = ("queue", "prefill", "decode")
# /metrics sums read before and after each strategy's searches.
COUNTERS = [f"openr:request_{phase}_time_seconds_sum" for phase in ENGINE_PHASES] + [
    "openr:request_queue_time_seconds_count", "openr:prm_batch_latency_seconds_sum"]
TRACE_SECONDS = ("wall_seconds", "policy_seconds", "prm_seconds", "other_seconds")


async def one_search(client: openai.AsyncOpenAI, model: str, request: dict, question: str) -> dict:
    """One search: its latency as the client saw it, its tokens and its trace."""
    start = time.perf_counter()
    reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                                 extra_body=request)
    return {"latency_s": time.perf_counter() - start, "tokens": reply.usage.completion_tokens,
            "trace": reply.model_extra["search_trace"]}


async def fire(client, model: str, request: dict, questions: list[str], in_flight: int) -> list[dict]:
    """One search per question, `in_flight` at a time."""
    slots = asyncio.Semaphore(in_flight)

    async def held(question: str) -> dict:
        async with slots:
            return await one_search(client, model, request, question)

    return await asyncio.gather(*(held(question) for question in questions))


async def metrics(http: httpx.AsyncClient) -> dict[str, float]:
    text = (await http.get("/metrics")).text
    return {name: metric_in(text, name) for name in COUNTERS}


async def profile(base_url: str, api_key: str, settings: list[Setting], questions: list[str], in_flight: int,
                  rounds: int) -> tuple[dict, dict[str, dict]]:
    """(what the server says it is, per setting: its searches and the /metrics deltas they caused)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    root = base_url.rstrip("/").removesuffix("/v1")
    runs = {s.name: {"searches": [], "deltas": dict.fromkeys(COUNTERS, 0.0)} for s in settings}
    headers = {"Authorization": f"Bearer {api_key}"}
    async with client, httpx.AsyncClient(base_url=root, timeout=30, headers=headers) as http:
        server = (await http.get("/version")).json()
        model = (await client.models.list()).data[0].id
        timeout_s = server.get("settings", {}).get("search", {}).get("max_timeout_s", DEFAULT_TIMEOUT_S)
        requests = {s.name: Grading(timeout_s=timeout_s).search_request(s.request) for s in settings}
        for setting in settings:  # the first searches pay one-off costs
            await one_search(client, model, requests[setting.name], questions[0])
        for _ in range(rounds):  # strategies take turns, so a drifting machine weighs on each alike
            for setting in settings:
                before = await metrics(http)
                runs[setting.name]["searches"] += await fire(client, model, requests[setting.name], questions,
                                                             in_flight)
                after = await metrics(http)
                for name in COUNTERS:
                    runs[setting.name]["deltas"][name] += after[name] - before[name]
    return server, runs


def summarise(name: str, searches: list[dict], deltas: dict[str, float]) -> dict:
    """Per-search means (seconds) of one setting: its latency, its trace's split, the engine's phases."""
    count = len(searches)
    traces = [s["trace"]["timing"] for s in searches]
    row = {"setting": name, "searches": count,
           "p50_latency_s": statistics.median(s["latency_s"] for s in searches),
           "tokens": statistics.mean(s["tokens"] for s in searches),
           "cut_by_time": sum(s["trace"]["stop_reason"] == "time" for s in searches),
           **{key.removesuffix("_seconds") + "_s": statistics.mean(t[key] for t in traces) for key in TRACE_SECONDS},
           "policy_round_trips": statistics.mean(t["policy_round_trips"] for t in traces),
           "prm_round_trips": statistics.mean(t["prm_round_trips"] for t in traces),
           "prm_batches_s": deltas["openr:prm_batch_latency_seconds_sum"] / count}
    engine_requests = deltas["openr:request_queue_time_seconds_count"]
    if engine_requests:  # the engine timed its requests (hf, vllm; a remote engine does not)
        row.update({f"engine_{phase}_s": deltas[f"openr:request_{phase}_time_seconds_sum"] / count
                    for phase in ENGINE_PHASES})
        row["engine_requests"] = engine_requests / count
        row["policy_outside_engine_s"] = row["policy_s"] - sum(row[f"engine_{p}_s"] for p in ENGINE_PHASES)
    row["latencies_s"] = [round(s["latency_s"], 4) for s in searches]
    return row


def table(rows: list[dict]) -> str:
    """The rows as markdown: seconds per search, and each p50 against the first setting's."""
    seconds = [("p50 latency s", "p50_latency_s"), ("wall", "wall_s"), ("policy await", "policy_s"),
               ("engine queue", "engine_queue_s"), ("prefill", "engine_prefill_s"), ("decode", "engine_decode_s"),
               ("PRM await", "prm_s"), ("other", "other_s")]
    columns = [(title, key, ".2f") for title, key in seconds] + [
        ("policy trips", "policy_round_trips", ".1f"), ("PRM trips", "prm_round_trips", ".1f"),
        ("tokens", "tokens", ".0f")]
    first = rows[0]
    lines = ["| setting | searches | " + " | ".join(title for title, *_ in columns) + f" | p50 ÷ {first['setting']} |"
             + " cut by time |", "| --- " * (len(columns) + 4) + "|"]
    for row in rows:
        cells = [format(row[key], spec) if key in row else "-" for _, key, spec in columns]
        ratio = row["p50_latency_s"] / first["p50_latency_s"]
        lines.append(f"| {row['setting']} | {row['searches']} | " + " | ".join(cells)
                     + f" | {ratio:.2f} | {row['cut_by_time']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=None,
                        help="profile the server at this /v1 URL (default: start `openr serve` with --engine and "
                             "--model on a free port, and stop it at the end)")
    parser.add_argument("--api-key", default="none", help="the --base-url server's API key (default: none)")
    parser.add_argument("--engine", default="hf", choices=["hf", "vllm"],
                        help="engine of the server started here (default: %(default)s)")
    parser.add_argument("--model", default=ARITH_ALIAS,
                        help="model bundle (policy and PRM) of the server started here (default: %(default)s)")
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), metavar="STRATEGY",
                        help="strategies profiled, each as `openr eval --strategies` asks it, mcts with --n "
                             f"simulations (default: {' '.join(DEFAULT_STRATEGIES)}); the table compares each "
                             "p50 with the first's")
    parser.add_argument("--n", type=int, default=DEFAULT_SAMPLES,
                        help="search.n: samples per problem, or per depth for beam_search and dvts "
                             "(default: %(default)s)")
    parser.add_argument("--beam-width", type=int, default=DEFAULT_BEAM_WIDTH,
                        help="search.beam_width of beam_search and dvts (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="search.max_steps: reasoning steps per solution (default: the server's)")
    parser.add_argument("--seed", type=int, default=0, help="search.seed of every search (default: %(default)s)")
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT,
                        help="searches in flight at once (default: %(default)s)")
    parser.add_argument("--problems", type=int, default=DEFAULT_PROBLEMS,
                        help="searches per strategy and round: one per arith test problem, the first N "
                             "(default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds; in each, every strategy runs its searches in turn (default: %(default)s)")
    parser.add_argument("--json", default="search_profile.json",
                        help="where to write the figures, settings and server (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = build_grid(args.strategies, [args.n], beam_width=args.beam_width, mcts_simulations=[args.n],
                          search_options={"max_steps": args.max_steps, "seed": args.seed})
    questions = [problem.question for problem in test_split()[:args.problems]]
    if args.base_url:
        server, runs = asyncio.run(profile(args.base_url, args.api_key, settings, questions, args.in_flight,
                                           args.rounds))
    else:
        with ServerProcess(["--engine", args.engine, "--model", args.model]) as started:  # open (no API key)
            server, runs = asyncio.run(profile(started.base_url, "none", settings, questions, args.in_flight,
                                               args.rounds))
    rows = [summarise(name, run["searches"], run["deltas"]) for name, run in runs.items()]
    print(table(rows))
    print(f"\nseconds per search; {args.in_flight} in flight; {server.get('engine')} engine on "
          f"{server.get('device')}, model {server.get('model')}")
    report = {"args": vars(args), "server": server, "settings": {s.name: s.request for s in settings}, "rows": rows}
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
