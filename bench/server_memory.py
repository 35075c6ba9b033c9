"""A running server's memory while many large searches run, and after they end.

Sends `--searches` chat completions at once (the first test-split arith
problems, one search each, `--strategy` at `--n` samples) through the OpenAI
SDK to a running `openr serve`, and reads the server's own `/metrics` every
`--every` seconds meanwhile: `process_resident_memory_bytes` (prometheus-client's
process collector, as vLLM's server exports it) and
`openr:process_peak_resident_memory_bytes` (the kernel's high-water mark, which
catches a peak between two reads). Reports the resident set before (idle),
its peak while the searches run, and after they have all answered (once
`--settle` seconds have passed), with each search's latency and tokens. The
memory is the whole server process: engine, PRM, prefix cache and searches.

    openr serve --engine hf --port 8125 --api-key k &
    python -m bench.server_memory --base-url http://127.0.0.1:8125/v1 --api-key k --searches 16 --n 256 \\
        --out bench/results/server_memory_n256.json

Start a fresh server for it: the peak high-water mark counts from the server's start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from bench.results_file import add_result_flags, write_result
from openr.tasks.arith import test_split

MIB = 2**20
RSS = "process_resident_memory_bytes"
PEAK = "openr:process_peak_resident_memory_bytes"


async def memory(client: httpx.AsyncClient, metrics_url: str) -> dict[str, float]:
    """The server's resident set and its high-water mark now, in MiB."""
    response = await client.get(metrics_url)
    response.raise_for_status()
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in (RSS, PEAK):
                found[sample.name] = sample.value / MIB
    missing = {RSS, PEAK} - set(found)
    if missing:
        raise SystemExit(f"{metrics_url} reports no {', '.join(sorted(missing))}: is this openr serve?")
    return found


async def one_search(client: AsyncOpenAI, model: str, question: str, search: dict) -> dict:
    started = time.monotonic()
    completion = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                                      extra_body={"search": search})
    return {"latency_s": round(time.monotonic() - started, 2), "completion_tokens": completion.usage.completion_tokens,
            "finish_reason": completion.choices[0].finish_reason}


async def measure(args: argparse.Namespace) -> dict:
    metrics_url = args.base_url.rstrip("/").removesuffix("/v1") + "/metrics"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key or "none", timeout=args.timeout_s + 60,
                         max_retries=0)
    model = (await client.models.list()).data[0].id
    search = {"strategy": args.strategy, "n": args.n, "seed": 0, "timeout_s": args.timeout_s}
    if args.strategy == "beam_search":
        search["beam_width"] = args.beam_width
    problems = test_split()[: args.searches]
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        before = await memory(http, metrics_url)
        tasks = [asyncio.create_task(one_search(client, model, p.question, search)) for p in problems]
        samples = [before[RSS]]
        while not all(task.done() for task in tasks):
            await asyncio.sleep(args.every)
            samples.append((await memory(http, metrics_url))[RSS])
        answers = [task.result() for task in tasks]
        during = await memory(http, metrics_url)
        await asyncio.sleep(args.settle)
        after = await memory(http, metrics_url)
    latencies = [a["latency_s"] for a in answers]
    return {"model": model, "search": search, "searches": len(problems), "reads": len(samples),
            "rss_mib": {"before": round(before[RSS], 1), "peak_read": round(max(samples), 1),
                        "peak_high_water": round(during[PEAK], 1), "after": round(after[RSS], 1)},
            "latency_s": {"p50": statistics.median(latencies), "max": max(latencies)},
            "mean_completion_tokens": round(statistics.fmean(a["completion_tokens"] for a in answers), 1),
            "finish_reasons": sorted({a["finish_reason"] for a in answers}), "answers": answers}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base-url", required=True, help="the running server's /v1 URL")
    parser.add_argument("--api-key", default=None, help="the server's --api-key, if it has one")
    parser.add_argument("--searches", type=int, default=16, help="searches in flight at once")
    parser.add_argument("--n", type=int, default=256, help="samples per search")
    parser.add_argument("--strategy", default="beam_search", help="the search strategy")
    parser.add_argument("--beam-width", type=int, default=4, help="beam search's width")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="each search's time budget")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between reads of /metrics")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the last answer before 'after'")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    if args.searches < 1 or args.n < 1 or args.every <= 0 or args.settle < 0:
        parser.error("--searches and --n must be positive, --every > 0 and --settle >= 0")
    figures = asyncio.run(measure(args))
    record = write_result(args.out, "server_memory", argv, args.note, figures)
    print(json.dumps({k: record[k] for k in ("rss_mib", "latency_s", "mean_completion_tokens", "finish_reasons")}))


if __name__ == "__main__":
    main()
