"""Fit DeepConf's online defaults by replay (issue 30): each problem's 16 samples,
with every token's log-probability and top-5, are collected once through the
chat API, then `strategy: "deepconf"` itself runs on them for every rule of a
grid, its samples served from the collection and halted by its own monitors.

Sample j of a search with seed s is the sample with seed s + j (the engine
seeds every sample on its own), and a chat request with n=16 and seed s gives
choice j seed s + j: so the replay answers, and counts tokens, exactly as a
search on the server would have (the tokens of a halted sample are those up to
the token its monitor halted it at, as the hf engine stops it). Majority vote
at n=16 and its adaptive form replay on the same samples, as the paired baseline.

Printed and written (--out): per rule, accuracy and mean tokens against
majority_vote n=16's; the chosen rule is the one spending the fewest tokens
whose accuracy is no more than --max-drop points below majority_vote n=16's,
or with --token-budget R the most accurate rule spending at most R times
majority_vote n=16's tokens (ties: the fewer tokens). --rules-from FILE
chooses again from an earlier run's replayed rules, without its samples.

    python -m bench.deepconf_replay --dataset arith-val --samples runs/deepconf_val.json \
        --out bench/results/deepconf_replay_arith_val.json --note "..."
    python -m bench.deepconf_replay --rules-from bench/results/deepconf_replay_arith_val.json \
        --token-budget 0.6 --out bench/results/deepconf_replay_arith_val_budget.json --note "..."
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

from bench.results_file import add_result_flags, write_result
from openr.contracts import Step
from openr.evaluation.answers import select_problems
from openr.search import Budget, SearchProblem, build_config, run_strategy
from openr.search.candidates import answer_key
from openr.server.launcher import ServerProcess
from openr.tasks.grading import extract_answer

SAMPLES = 16
TOP_LOGPROBS = 5
GRID = {"warmup": (2, 4, 6), "keep_percent": (30.0, 50.0, 75.0, 90.0), "consensus": (0.65, 0.75, 0.85, 0.95),
        "wave": (2, 4), "measure": ("lowest_group", "min_logprob"), "window": (4, 8, 16)}


async def collect(base_url: str, model: str, dataset: str, limit: int, seed: int, temperature: float,
                  concurrency: int) -> dict:
    """{problem id: {"question", "gold", "samples": [{"text", "finish", "logprobs", "top"}] x SAMPLES}}."""
    import openai
    from tqdm import tqdm

    problems = select_problems(dataset, limit, seed)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=900)
    slots = asyncio.Semaphore(concurrency)
    rows: dict = {}
    bar = tqdm(total=len(problems), desc="problems", mininterval=10)

    async def one(problem) -> None:
        async with slots:
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": problem.question}], n=SAMPLES, seed=seed,
                temperature=temperature, logprobs=True, top_logprobs=TOP_LOGPROBS)  # to the end of the context
        samples = [{"text": c.message.content, "finish": "eos" if c.finish_reason == "stop" else "length",
                    "logprobs": [round(t.logprob, 5) for t in c.logprobs.content],
                    "top": [[round(a.logprob, 5) for a in t.top_logprobs] for t in c.logprobs.content]}
                   for c in sorted(reply.choices, key=lambda c: c.index)]
        rows[problem.id] = {"question": problem.question, "gold": problem.answer, "samples": samples}
        bar.update(1)

    try:
        await asyncio.gather(*(one(p) for p in problems))
    finally:
        bar.close()
    return rows


class ReplayPolicy:
    """Serves a problem's collected samples by seed, each halted where the monitor says."""

    def __init__(self, samples: Sequence[dict], seed: int):
        self.samples, self.seed = samples, seed
        self.calls = 0  # engine round trips: what a search's latency grows with

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None,
                             top_logprobs=0, monitor=None) -> list[list[Step]]:
        self.calls += 1
        return [[self._step(self.samples[seed - self.seed + i], max_tokens, monitor) for i in range(n)]
                for _ in prefixes]

    @staticmethod
    def _step(sample: dict, max_tokens: int, monitor) -> Step:
        """The sample (searches here have no token budget, so `max_tokens` never cuts
        it), halted at the first token its monitor says so."""
        logprobs, top = sample["logprobs"], sample["top"]
        if monitor is not None:
            watch = monitor()
            for i, (lp, alternatives) in enumerate(zip(logprobs, top)):
                if watch(lp, alternatives):
                    return Step("", i + 1, "halted", 0.0, tuple(logprobs[:i + 1]), tuple(map(tuple, top[:i + 1])))
        eos = sample["finish"] == "eos"  # the end-of-text token: counted, with no top-k entry
        return Step(sample["text"], len(logprobs) + eos, sample["finish"], 0.0, tuple(logprobs), tuple(map(tuple, top)))


def replay(rows: dict, strategy: str, options: dict, seed: int) -> tuple[float, float, float]:
    """(accuracy, mean tokens, mean engine calls) of `strategy` with `options` over every problem's samples."""

    async def all_problems():
        right = tokens = calls = 0
        for row in rows.values():
            problem = SearchProblem(row["question"], row["question"], extract_answer)
            config = build_config(strategy, {"n": SAMPLES, "seed": seed, **options})
            policy = ReplayPolicy(row["samples"], seed)
            result = await run_strategy(strategy, problem, policy, None, config, Budget())
            right += answer_key(result.candidates[0].answer if result.candidates else None) == answer_key(row["gold"])
            tokens += result.tokens_generated
            calls += policy.calls
        return right / len(rows), tokens / len(rows), calls / len(rows)

    return asyncio.run(all_problems())


def rules() -> dict[str, tuple[str, dict]]:
    table = {"majority_vote n=16": ("majority_vote", {}),
             "majority_vote n=16 adaptive": ("majority_vote", {"adaptive": True})}
    for measure, keep in itertools.product(GRID["measure"], GRID["keep_percent"]):
        table[f"deepconf offline keep {keep:g}% measure={measure}"] = (
            "deepconf", {"mode": "offline", "keep_percent": keep, "measure": measure})
    keys = ("warmup", "keep_percent", "consensus", "wave", "measure", "window")
    for values in itertools.product(*(GRID[k] for k in keys)):
        options = dict(zip(keys, values))
        if options["measure"] == "min_logprob" and options["window"] != GRID["window"][0]:
            continue  # min_logprob has no window
        table["deepconf online " + " ".join(f"{k}={v}" for k, v in options.items())] = ("deepconf", options)
    return table


def choose(results: dict, max_drop: float, token_budget: float | None) -> str | None:
    """The online rule chosen: the cheapest within `max_drop` points of
    majority_vote n=16, or the most accurate within `token_budget` x its tokens."""
    base = results["majority_vote n=16"]
    online = [n for n in results if n.startswith("deepconf online")]
    if token_budget is not None:
        eligible = [n for n in online if results[n]["tokens_against_majority_16"] <= token_budget]
        return min(eligible, key=lambda n: (-results[n]["accuracy"], results[n]["mean_tokens"]), default=None)
    eligible = [n for n in online if results[n]["accuracy"] >= base["accuracy"] - max_drop / 100]
    return min(eligible, key=lambda n: (results[n]["mean_tokens"], -results[n]["accuracy"]), default=None)


def replay_all(rows: dict, seed: int) -> dict:
    results = {}
    for name, (strategy, options) in rules().items():
        accuracy, tokens, calls = replay(rows, strategy, options, seed)
        results[name] = {"strategy": strategy, "options": options, "accuracy": round(accuracy, 4),
                         "mean_tokens": round(tokens, 1), "mean_engine_calls": round(calls, 2)}
    base = results["majority_vote n=16"]
    for record in results.values():
        record["tokens_against_majority_16"] = round(record["mean_tokens"] / base["mean_tokens"], 3)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=None, help="a running server (default: start `openr serve`)")
    parser.add_argument("--model", default="openr-arith")
    parser.add_argument("--dataset", default="arith-val", help="as `openr eval --dataset` takes it; fit on validation")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="the problem draw's and the samples' seed")
    parser.add_argument("--temperature", type=float, default=0.8, help="the searches' default")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-drop", type=float, default=0.0,
                        help="accuracy points below majority_vote n=16 a chosen rule may lose on this split "
                             "(default 0: none, which leaves issue 30's 2 points to the test split's noise)")
    parser.add_argument("--token-budget", type=float, default=None,
                        help="choose instead the most accurate online rule spending at most this many times "
                             "majority_vote n=16's tokens (issue 30's goal: 0.6)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", type=Path, help="JSON cache of the samples: read if it exists")
    source.add_argument("--rules-from", type=Path,
                        help="an earlier run's result file: choose again from its replayed rules")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    if args.rules_from:
        earlier = json.loads(args.rules_from.read_text())
        rows, results = None, earlier["rules"]
        for key in ("dataset", "seed", "temperature"):
            setattr(args, key, earlier[key])
    elif args.samples.exists():
        rows = json.loads(args.samples.read_text())
    else:
        if args.base_url:
            rows = asyncio.run(collect(args.base_url, args.model, args.dataset, args.limit, args.seed,
                                       args.temperature, args.concurrency))
        else:
            with ServerProcess([]) as server:
                rows = asyncio.run(collect(server.base_url, args.model, args.dataset, args.limit, args.seed,
                                           args.temperature, args.concurrency))
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        args.samples.write_text(json.dumps(rows, separators=(",", ":")))
    if rows is not None:
        results = replay_all(rows, args.seed)
    problems = len(rows) if rows is not None else earlier["problems"]
    base = results["majority_vote n=16"]
    chosen = choose(results, args.max_drop, args.token_budget)
    print(f"{problems} problems; majority_vote n=16: {100 * base['accuracy']:.1f}%, {base['mean_tokens']:.0f} tokens")
    for name in [n for n in results if not n.startswith("deepconf online")] + ([chosen] if chosen else []):
        r = results[name]
        print(f"| {name} | {100 * r['accuracy']:.1f}% | {r['tokens_against_majority_16']:.2f}x |")
    write_result(args.out, "deepconf_replay", argv, args.note,
                 {"dataset": args.dataset, "problems": problems, "samples": SAMPLES, "seed": args.seed,
                  "temperature": args.temperature, "max_drop_points": args.max_drop,
                  "token_budget": args.token_budget, "chosen": chosen,
                  "rules": results})


if __name__ == "__main__":
    main()
