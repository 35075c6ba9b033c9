"""How much signal one GRPO round carries, against its batch size: the
control that any RL recipe on openr-arith has to pass before its runs mean
anything.

At the shipped policy's weights, each setting samples `--rounds` rounds of
questions (the trainer's own seeded draws, through the serving engine) and
measures the round's gradient signal: the cosine between the plain policy
gradients (outcome reward, group-normalised advantages, ratio 1) of two halves
of the round, whole questions each (`openr.rl.diagnostics`). Independent halves
of a batch agree only through the signal they share: if one sample's gradient
is signal mu plus noise of variance sigma^2, halves of n samples meet at a
cosine of about n|mu|^2 / (n|mu|^2 + sigma^2). So the cosine says how many
samples an optimizer step needs before its direction is the reward's rather
than the draw's. Nothing is trained. The zero-advantage share says how many
of a round's samples carry nothing (their gradient is exactly 0): dynamic
sampling draws 1 / (1 - share) times the samples to fill a round with ones that do.

Writes OUT (JSON: per batch size, every round's cosine, their mean and
standard error, the zero-advantage share, samples, minutes, the machine).

    python -m bench.rl_signal --out bench/results/rl_signal.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, POLICY_SUBDIR
from openr.engine.hf_engine import HFEngine
from openr.hardware import machine_info
from openr.rl.commands import rl_train_problems
from openr.rl.config import RLConfig
from openr.rl.diagnostics import zero_advantage_share
from openr.rl.rollout import encode_episodes
from openr.rl.trainer import RLRun
from openr.rl.update import gradient_signal, step_advantages
from openr.tasks import arith

DEFAULT_POLICY = BUILTIN_BUNDLES[ARITH_ALIAS] / POLICY_SUBDIR
DEFAULT_BATCHES = (128, 512, 1024)  # samples per round
DEFAULT_GROUP_SIZE = 8
DEFAULT_ROUNDS = 3
TRAIN_PROBLEMS = 20_000  # `openr train rl`'s default pool
REVIEW_COSINE = 0.012  # two real rounds of 128 samples, as the review measured it (issue #26)


def round_signal(run: RLRun, episodes: list) -> tuple[float | None, float]:
    """The round's gradient signal and zero-advantage share (None: no group to compare)."""
    advantages, _ = step_advantages(run.config, episodes, None)
    if len(episodes) < 2 * run.config.group_size:
        return None, zero_advantage_share(advantages)
    batch = encode_episodes(episodes, run.tokenizer, run.pad_id)
    return gradient_signal(run, batch, advantages), zero_advantage_share(advantages)


def summary(values: list[float | None]) -> dict:
    kept = [v for v in values if v is not None]
    spread = statistics.stdev(kept) / len(kept) ** 0.5 if len(kept) > 1 else None
    return {"per_round": values, "mean": statistics.fmean(kept) if kept else None, "standard_error": spread}


async def measure(run: RLRun, engine: HFEngine, rounds: int, bar) -> dict:
    """Every round's signal and zero-advantage share."""
    cosines, zero_shares = [], []
    for iteration in range(rounds):
        cosine, zero_share = round_signal(run, await run.rollout(engine, iteration))
        cosines.append(cosine)
        zero_shares.append(zero_share)
        bar.update(1)
    return {"cosine": summary(cosines), "zero_advantage_share": statistics.fmean(zero_shares),
            "samples": run.state.samples}


async def run_settings(args) -> list[dict]:
    pool = rl_train_problems(TRAIN_PROBLEMS)
    held_out = arith.test_split()[:1]  # unused: nothing is evaluated
    rows = []
    with tqdm(total=len(args.batches) * args.rounds, desc="rl signal", disable=args.no_progress) as bar:
        for batch in args.batches:
            config = RLConfig(questions_per_iteration=batch // args.group_size, group_size=args.group_size,
                              minibatch_size=32, kl_coef=0.0, seed=args.seed)
            run = RLRun(config, args.policy, None, tempfile.mkdtemp(), pool, held_out)
            engine = HFEngine.for_model(run.model, run.tokenizer, decode_batch_size=min(batch, 256))
            await engine.start()
            started = time.monotonic()
            try:
                row = await measure(run, engine, args.rounds, bar)
            finally:
                await engine.close()
            rows.append({"samples_per_round": batch, "group_size": args.group_size, **row,
                         "minutes": (time.monotonic() - started) / 60})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=str(DEFAULT_POLICY), help="policy checkpoint (default: openr-arith's)")
    parser.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES),
                        help="samples per round to measure (default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE,
                        help="samples per question (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="rounds measured per setting (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the questions and the sampling")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if any(b % args.group_size or b < 2 * args.group_size for b in args.batches) or args.rounds < 1:
        parser.error("each --batches value must be a multiple of --group-size, and at least two groups")
    rows = asyncio.run(run_settings(args))
    result = {"bench": "rl_signal", "review_cosine_at_128": REVIEW_COSINE, "settings": rows,
              "machine": machine_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'samples/round':>13} {'cosine':>8} {'+-':>6} {'zero-adv':>8} {'minutes':>7}")
    for row in rows:
        cosine = row["cosine"]
        cells = [_cell(cosine["mean"], 8, 3), _cell(cosine["standard_error"], 6, 3),
                 _cell(row["zero_advantage_share"], 8, 2)]
        print(f"{row['samples_per_round']:>13} {' '.join(cells)} {row['minutes']:>7.1f}")


def _cell(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


if __name__ == "__main__":
    main()
