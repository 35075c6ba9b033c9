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
3. `openr train sft`'s loop from the start on each, per schedule;
4. each graded greedily on all 500 arith-val problems, beside the start.

    openr serve --engine hf --port 8127 --api-key k &
    python -m bench.rl_search_expert --base-url http://127.0.0.1:8127/v1 --api-key k \\
        --out bench/results/rl_search_expert.json
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


async def searched(args: argparse.Namespace, problems: list) -> list[str | None]:
    """Each problem's searched answer (None where the request failed)."""
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key or "none", timeout=3600, max_retries=0)
    model = (await client.models.list()).data[0].id
    search = {"strategy": args.strategy, "n": args.n, "seed": args.seed}
    if args.strategy in ("beam_search", "dvts"):
        search["beam_width"] = args.beam_width
    slots, bar = asyncio.Semaphore(args.concurrency), tqdm(total=len(problems), desc="search")

    async def one(problem) -> str | None:
        async with slots:
            try:
                reply = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": problem.question}],
                    extra_body={"search": search})
                return reply.choices[0].message.content
            except Exception as exc:  # a failed search keeps nothing; counted in the result
                tqdm.write(f"{problem.id}: {exc}")
                return None
            finally:
                bar.update(1)

    answers = await asyncio.gather(*(one(p) for p in problems))
    bar.close()
    return answers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base-url", required=True, help="a running openr serve on the starting policy (/v1 URL)")
    parser.add_argument("--api-key", default=None, help="its --api-key")
    parser.add_argument("--questions", type=int, default=1024, help="RL training questions searched")
    parser.add_argument("--strategy", default="beam_search", help="the search that is the expert")
    parser.add_argument("--n", type=int, default=16, help="its samples")
    parser.add_argument("--beam-width", type=int, default=4, help="its beam width")
    parser.add_argument("--concurrency", type=int, default=16, help="searches in flight")
    parser.add_argument("--seed", type=int, default=0, help="the question draw's and the searches' seed")
    parser.add_argument("--schedules", type=schedule, nargs="+", default=[schedule("1e-4:75:10")],
                        help="fine-tuning schedules LR:STEPS:WARMUP of batches of 16")
    parser.add_argument("--val-problems", type=int, default=500, help="arith-val problems graded")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    if min(args.questions, args.n, args.concurrency, args.val_problems) < 1:
        parser.error("--questions, --n, --concurrency and --val-problems must be positive")
    problems = random.Random(args.seed).sample(rl_train_problems(20_000), args.questions)
    began = time.monotonic()
    answers = asyncio.run(searched(args, problems))
    search_minutes = round((time.monotonic() - began) / 60, 2)
    greedy_right = greedy_grades(START, problems, progress=True)
    right = [(p, a, g) for p, a, g in zip(problems, answers, greedy_right) if a and is_correct(a, p.answer)]
    sets = {"search": [dataclasses.replace(p, solution=a) for p, a, _ in right]}
    sets["search_greedy_wrong"] = [dataclasses.replace(p, solution=a) for p, a, g in right if not g]
    val = arith.validation_split()[: args.val_problems]
    with tempfile.TemporaryDirectory() as tmp:
        models = {"start": grade(START, val), **fine_tunes(START, sets, args.schedules, val, Path(tmp))}
    figures = {"split": "arith-val", "problems": len(val), "start": label(START),
               "expert": {"strategy": args.strategy, "n": args.n, "beam_width": args.beam_width,
                          "questions": len(problems), "failed": sum(a is None for a in answers),
                          "right": len(right), "greedy_right": sum(greedy_right),
                          "right_where_greedy_wrong": len(sets["search_greedy_wrong"]), "minutes": search_minutes},
               "models": models}
    record = write_result(args.out, "rl_search_expert", argv, args.note, figures)
    print(json.dumps({"expert": record["expert"], **{k: m["accuracy"] for k, m in record["models"].items()}},
                     indent=2))


if __name__ == "__main__":
    main()
