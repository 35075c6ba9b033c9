"""What an outcome filter lets through: of a policy's verified-correct samples
(the ones expert iteration fine-tunes on and GRPO pushes up), how many hold a
step whose arithmetic is wrong, so that the right answer came from slips that
cancelled out.

Samples `--samples` solutions to each of `--questions` questions of RL's own
arith training pool through the serving engine (seeded), grades each final
answer exactly, and checks every step of the correct ones with
`arith.check_step`. Writes OUT (JSON: per temperature, samples, correct,
correct with a wrong step, the machine).

    python -m bench.rl_accepted --out bench/results/rl_accepted.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, POLICY_SUBDIR
from openr.engine.hf_engine import HFEngine
from openr.hardware import machine_info
from openr.rl.commands import rl_train_problems
from openr.tasks import arith
from openr.tasks.grading import is_correct
from openr.training.policy_accuracy import engine_replies

DEFAULT_POLICY = BUILTIN_BUNDLES[ARITH_ALIAS] / POLICY_SUBDIR
SEED = 7


def has_wrong_step(solution: str) -> bool:
    return any(arith.check_step(step) is False for step in solution.split(arith.STEP_SEPARATOR))


def count(policy: Path, questions: int, samples: int, temperatures: list[float]) -> list[dict]:
    problems = rl_train_problems(questions)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)

    async def sample(temperature: float) -> list[list[str]]:
        engine = HFEngine.for_model(model, tokenizer, decode_batch_size=questions * samples)
        await engine.start()
        try:
            return await engine_replies(engine, [p.question for p in problems], temperature=temperature,
                                        samples=samples, seed=SEED, desc=f"T={temperature}")
        finally:
            await engine.close()

    rows = []
    for temperature in temperatures:
        replies = asyncio.run(sample(temperature))
        correct = [r for rs, p in zip(replies, problems) for r in rs if is_correct(r, p.answer, lenient=False)]
        rows.append({"temperature": temperature, "samples": questions * samples, "correct": len(correct),
                     "correct_with_a_wrong_step": sum(has_wrong_step(r) for r in correct)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rl_accepted", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="policy checkpoint")
    parser.add_argument("--questions", type=int, default=64, help="questions from RL's training pool")
    parser.add_argument("--samples", type=int, default=8, help="samples per question")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.6], help="sampling temperatures")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    rows = count(args.policy, args.questions, args.samples, args.temperatures)
    result = {"policy": str(args.policy), "questions": args.questions, "seed": SEED, "rows": rows,
              "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
