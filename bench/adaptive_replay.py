"""How far can adaptive stopping go on this policy? Replays stopping rules on
each problem's 16 samples, collected once (issue 14).

Sample j of a best-of-16 with `seed` s is the sample with seed s + j (the
engine seeds every sample on its own), so each problem's 16 samples are
collected one request at a time (best_of_n, n=1, seed s + j), with the PRM's
score of each, and every rule is replayed on them offline: a rule that stops
after k samples answers from the first k, exactly as `search.adaptive` would
have. Printed per rule: accuracy and mean generated tokens against n=16's.

Rules:
- `n=K`: the first K samples, no stopping;
- `adaptive, confidence C`: the server's rule (`openr.search.waves`), waves
  of 4 then 2, under the aggregation (`--aggregation`);
- `oracle`: stops at the first wave whose answer is right (a bound: it knows
  the gold answer);
- `give up at K below B` (PRM aggregations): the server's rule, plus a stop
  once the first K samples have no solution the PRM scores B or more.

It starts `openr serve` on the default model (or uses the server at
--base-url); the samples are cached in --samples, so a re-run only replays.

    python -m bench.adaptive_replay --limit 200 --samples runs/replay.json
    python -m bench.adaptive_replay --samples bench/results/adaptive_replay_arith.json   # replay the committed samples
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from openr.evaluation.answers import select_problems
from openr.search.aggregation import AGGREGATIONS
from openr.search.candidates import Candidate, answer_key
from openr.search.waves import FIRST_WAVE_SAMPLES, WAVE_SAMPLES, leader_confidence
from openr.server.launcher import ServerProcess

SAMPLES = 16
FIELDS = ("answer", "aggregate_score", "finished", "tokens")


async def collect(base_url: str, api_key: str, model: str, dataset: str, limit: int | None, seed: int,
                  concurrency: int) -> dict:
    """{problem id: {"gold", "samples": [16 x FIELDS]}}, sample j drawn with seed + j."""
    import openai
    from tqdm import tqdm

    problems = select_problems(dataset, limit, seed)
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=900)
    slots = asyncio.Semaphore(concurrency)
    rows = {p.id: {"gold": p.answer, "samples": [None] * SAMPLES} for p in problems}
    bar = tqdm(total=len(problems) * SAMPLES, desc="samples", mininterval=5)

    async def one(problem, j: int) -> None:
        async with slots:
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": problem.question}],
                extra_body={"search": {"strategy": "best_of_n", "n": 1, "seed": seed + j, "return_trace": True}})
            sample = reply.model_dump()["search_trace"]["candidates"][0]
            rows[problem.id]["samples"][j] = {k: sample[k] for k in FIELDS} | {
                "aggregate_score": round(sample["aggregate_score"], 6)}
            bar.update(1)

    try:
        await asyncio.gather(*(one(p, j) for p in problems for j in range(SAMPLES)))
    finally:
        bar.close()
    return rows


def waves() -> list[int]:
    """Sample counts after each wave of an adaptive search of 16."""
    counts, k = [], FIRST_WAVE_SAMPLES
    while k < SAMPLES:
        counts.append(k)
        k += WAVE_SAMPLES
    return counts + [SAMPLES]


def replay(rows: dict, aggregation, stop_after) -> tuple[float, float]:
    """(accuracy, tokens / n=16's tokens) when each problem stops after `stop_after(candidates, gold)` samples."""
    right = tokens = full = 0
    for row in rows.values():
        candidates = [Candidate(steps=("",), aggregate_score=s["aggregate_score"],
                                tokens=s["tokens"], finished=s["finished"], answer=s["answer"]) for s in row["samples"]]
        gold = answer_key(row["gold"])
        k = stop_after(candidates, gold)
        right += _answer(candidates[:k], aggregation) == gold
        tokens += sum(c.tokens for c in candidates[:k])
        full += sum(c.tokens for c in candidates)
    return right / len(rows), tokens / full


def _answer(candidates, aggregation) -> str | None:
    return next((answer_key(c.answer) for c in aggregation.rank_final(candidates) if c.answer is not None), None)


def rules(aggregation) -> dict:
    def fixed(k):
        return lambda candidates, gold: k

    def adaptive(confidence, give_up_at=None, belief=None):
        def stop_after(candidates, gold):
            for k in waves():
                if k < SAMPLES and leader_confidence(candidates[:k], aggregation) >= confidence:
                    return k
                if give_up_at is not None and k >= give_up_at and \
                        max(c.aggregate_score for c in candidates[:k]) < belief:
                    return k
            return SAMPLES
        return stop_after

    def oracle(candidates, gold):
        return next((k for k in waves() if _answer(candidates[:k], aggregation) == gold), FIRST_WAVE_SAMPLES)

    table = {f"n={k}": fixed(k) for k in (4, 8, 16)}
    table |= {f"adaptive, confidence {c}": adaptive(c) for c in (0.95, 0.9, 0.85)}
    table["oracle"] = oracle
    if aggregation.uses_prm:
        table |= {f"give up at {k} below {b}": adaptive(0.95, k, b) for k in (4, 6, 8) for b in (0.2, 0.4, 0.6)}
    return table


def _collect_from_a_server(args) -> dict:
    if args.base_url:
        return asyncio.run(collect(args.base_url, args.api_key, args.model, args.dataset, args.limit, args.seed,
                                   args.concurrency))
    with ServerProcess([]) as server:  # the default model, open (no API key)
        return asyncio.run(collect(server.base_url, "none", args.model, args.dataset, args.limit, args.seed,
                                   args.concurrency))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=None,
                        help="a running server to sample from (default: start `openr serve` on the default model)")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--model", default="openr-arith", help="the model name the server answers to")
    parser.add_argument("--dataset", default="arith", help="as `openr eval --dataset` takes it (default: arith)")
    parser.add_argument("--limit", type=int, default=200, help="problems, drawn as `openr eval` draws them")
    parser.add_argument("--seed", type=int, default=0, help="the problem draw's and the samples' seed")
    parser.add_argument("--aggregations", nargs="+", default=["prm_min_max", "majority_vote"],
                        help="aggregations to replay (best_of_n's default, and majority_vote's)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--samples", type=Path, required=True,
                        help="JSON cache of the collected samples: read if it exists, else written")
    args = parser.parse_args(argv)
    if args.samples.exists():
        rows = json.loads(args.samples.read_text())
    else:
        rows = _collect_from_a_server(args)
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        args.samples.write_text(json.dumps(rows, separators=(",", ":")))
    print(f"\n{len(rows)} problems, {SAMPLES} samples each")
    print("\n| aggregation | rule | accuracy | tokens against n=16 |\n| --- | --- | --- | --- |")
    for name in args.aggregations:
        aggregation = AGGREGATIONS[name]
        for rule, stop_after in rules(aggregation).items():
            accuracy, tokens = replay(rows, aggregation, stop_after)
            print(f"| {name} | {rule} | {100 * accuracy:.1f}% | {tokens:.2f}x |")


if __name__ == "__main__":
    main()
