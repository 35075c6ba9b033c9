"""Expert iteration with PRM-guided search as the expert: OpenR's loop, one round.

Expert iteration from the policy's own samples did not lift arith-val
(bench/results/rl_ei_cosine, rl_ei_big): its right samples are solutions the
policy already writes, to questions it already solves. Search with the PRM
solves far more (beam search n=16 answers 71% of arith-val where greedy answers
39%), so its verified-right solutions can teach what greedy gets wrong. One
round, with final answers only (no gold solution is read):

1. `--questions` RL training questions (none in the test or validation split),
   each searched once through a running `openr serve` on the starting policy
   (`--strategy`, `--n`, `--beam-width`), through the OpenAI SDK;
2. the searched solutions whose final answer is right are kept (`search`), and,
   as the arm that isolates what greedy cannot yet do, those of the questions
   the starting policy answers wrong greedily (`search_greedy_wrong`);
3. `openr train sft`'s loop from the start on each, per schedule and
   fine-tuning seed;
4. each graded greedily on all 500 arith-val problems, beside the start.

    openr serve --engine hf --port 8127 --api-key k &
    python -m bench.rl_search_expert --base-url http://127.0.0.1:8127/v1 --api-key k \\
        --out bench/results/rl_search_expert.json

With `--solutions FILE` every searched answer is kept, so a run resumes and a
later run (more questions, other schedules or seeds) searches only what is new.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI
from tqdm.auto import tqdm

from bench.results_file import add_result_flags, write_result
from bench.rl_rft_control import fine_tunes, schedule
from bench.sft_control import START, grade, label
from openr.rl.commands import rl_train_problems
from openr.tasks import arith
from openr.tasks.grading import is_correct
from openr.training.policy_accuracy import greedy_grades


def expert(args: argparse.Namespace) -> dict:
    """The search that is the expert, as the server's `search` object takes it."""
    search = {"strategy": args.strategy, "n": args.n, "seed": args.seed}
    if args.strategy in ("beam_search", "dvts"):
        search["beam_width"] = args.beam_width
    return search


def stored(path: Path | None, search: dict, policy: str) -> dict[str, str]:
    """The answers `--solutions` already holds for this expert (the search, on
    `policy`), by problem id. A row that names no policy was searched on the
    shipped one (the first rounds wrote none)."""
    if path is None or not path.exists():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["id"]: row["answer"] for row in rows
            if row["search"] == search and row.get("policy", label(START)) == policy}


async def searched(args: argparse.Namespace, problems: list, done: dict[str, str]) -> list[str | None]:
    """Each problem's searched answer (None where the request failed). Answers
    already `done` (read from `--solutions`) are reused; each new one is
    appended there as it comes, so an interrupted run resumes where it stopped."""
    search, policy = expert(args), label(args.start)
    todo = [p for p in problems if p.id not in done]
    if not todo:
        return [done[p.id] for p in problems]
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key or "none", timeout=3600, max_retries=0)
    model = (await client.models.list()).data[0].id
    slots, bar = asyncio.Semaphore(args.concurrency), tqdm(total=len(todo), desc="search")
    sink = args.solutions.open("a") if args.solutions else None

    async def one(problem) -> str | None:
        async with slots:
            try:
                reply = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": problem.question}],
                    extra_body={"search": search})
                done[problem.id] = reply.choices[0].message.content
                if sink:
                    row = {"id": problem.id, "search": search, "policy": policy, "answer": done[problem.id]}
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                return done[problem.id]
            except Exception as exc:  # a failed search keeps nothing; counted in the result
                tqdm.write(f"{problem.id}: {exc}")
                return None
            finally:
                bar.update(1)

    await asyncio.gather(*(one(p) for p in todo))
    bar.close()
    if sink:
        sink.close()
    return [done.get(p.id) for p in problems]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base-url", required=True, help="a running openr serve on the starting policy (/v1 URL)")
    parser.add_argument("--api-key", default=None, help="its --api-key")
    parser.add_argument("--start", type=Path, default=START,
                        help="the policy the server at --base-url runs, which is graded greedily and fine-tuned "
                             "(a later round: the policy an earlier round wrote under --keep)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the fine-tuned policies here (one folder per arm, schedule and seed) instead "
                             "of a temporary folder, so a later round can serve one")
    parser.add_argument("--questions", type=int, default=1024, help="RL training questions searched")
    parser.add_argument("--strategy", default="beam_search", help="the search that is the expert")
    parser.add_argument("--n", type=int, default=16, help="its samples")
    parser.add_argument("--beam-width", type=int, default=4, help="its beam width")
    parser.add_argument("--concurrency", type=int, default=16, help="searches in flight")
    parser.add_argument("--seed", type=int, default=0, help="the question draw's and the searches' seed")
    parser.add_argument("--schedules", type=schedule, nargs="+", default=[schedule("1e-4:75:10")],
                        help="fine-tuning schedules LR:STEPS:WARMUP of batches of 16")
    parser.add_argument("--fine-tune-seeds", type=int, nargs="+", default=[1],
                        help="each schedule is fine-tuned once per seed (the batches' order)")
    parser.add_argument("--solutions", type=Path, default=None,
                        help="a jsonl file that keeps every searched answer: reused by a later run with the same "
                             "expert, so a run resumes and replicates skip the searches")
    parser.add_argument("--val-problems", type=int, default=500, help="arith-val problems graded")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    if min(args.questions, args.n, args.concurrency, args.val_problems) < 1:
        parser.error("--questions, --n, --concurrency and --val-problems must be positive")
    problems = random.Random(args.seed).sample(rl_train_problems(20_000), args.questions)
    done = stored(args.solutions, expert(args), label(args.start))
    reused = len(done.keys() & {p.id for p in problems})
    began = time.monotonic()
    answers = asyncio.run(searched(args, problems, done))
    search_minutes = round((time.monotonic() - began) / 60, 2)
    greedy_right = greedy_grades(args.start, problems, progress=True)
    right = [(p, a, g) for p, a, g in zip(problems, answers, greedy_right) if a and is_correct(a, p.answer)]
    sets = {"search": [dataclasses.replace(p, solution=a) for p, a, _ in right]}
    sets["search_greedy_wrong"] = [dataclasses.replace(p, solution=a) for p, a, g in right if not g]
    val = arith.validation_split()[: args.val_problems]
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        tuned = fine_tunes(args.start, sets, args.schedules, val, keep, tuple(args.fine_tune_seeds))
        models = {"start": grade(args.start, val), **tuned}
    figures = {"split": "arith-val", "problems": len(val), "start": label(args.start),
               "expert": {"strategy": args.strategy, "n": args.n, "beam_width": args.beam_width,
                          "questions": len(problems), "failed": sum(a is None for a in answers),
                          "reused": reused,
                          "right": len(right), "greedy_right": sum(greedy_right),
                          "right_where_greedy_wrong": len(sets["search_greedy_wrong"]), "minutes": search_minutes},
               "models": models}
    record = write_result(args.out, "rl_search_expert", argv, args.note, figures)
    print(json.dumps({"expert": record["expert"], **{k: m["accuracy"] for k, m in record["models"].items()}},
                     indent=2))


if __name__ == "__main__":
    main()
