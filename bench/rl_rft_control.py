"""Expert iteration's data against gold, under one fine-tuning schedule.

Expert iteration (`openr train rl --algo expert-iteration`) lowered arith-val
in every run (bench/results/rl_ei/), while more SFT on gold raised it far
(bench/results/sft_control.json). Two things differ between them: the data
(the policy's own verified-correct samples against gold solutions) and the
update (RL's AdamW rounds against SFT's Muon + AdamW loop with its warmup and
cosine). This holds the update fixed to separate them:

1. one large expert-iteration sampling pass from the starting policy
   (`--questions` RL training questions x `--group-size` samples at T=1,
   through the RL trainer's own rollout), keeping what expert iteration keeps:
   one of each distinct verified-correct solution per question;
2. `openr train sft`'s loop from the same start, once per schedule
   (`--schedules LR:STEPS:WARMUP ...`), on each of three data sets:
   - `own`: those accepted samples (expert iteration's data);
   - `gold_same`: the gold solutions of the same questions (the positive
     control for the data: what the same questions teach when the solution
     is the gold one);
   - `gold_all`: the gold solutions of every question drawn, solved or not
     (what the unsolved questions add);
3. each result graded greedily on all 500 arith-val problems, by level,
   beside the start.

    python -m bench.rl_rft_control --out bench/results/rl_rft_control.json

If `own` falls where `gold_same` rises, the self-generated solutions are the
problem; if both fall alike, the schedule is; if only `gold_all` rises, what
the policy cannot yet solve is what teaches it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.results_file import add_result_flags, write_result
from bench.sft_control import START, grade, label
from openr.rl.commands import rl_train_problems
from openr.rl.config import RLConfig
from openr.rl.trainer import RLRun
from openr.rl.update import accepted_episodes
from openr.tasks import arith
from openr.tasks.problem import STEP_SEPARATOR
from openr.training.sft import SFTConfig, train_policy


def schedule(text: str) -> tuple[float, int, int]:
    """LR:STEPS:WARMUP, e.g. 1e-3:75:10."""
    try:
        lr, steps, warmup = text.split(":")
        parsed = float(lr), int(steps), int(warmup)
    except ValueError:
        parsed = (0.0, 0, 0)
    if not (parsed[0] > 0 and parsed[1] >= 1 and parsed[2] >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not LR:STEPS:WARMUP with a positive rate and at least one "
                                         "step of each (e.g. 1e-3:75:10)")
    return parsed


async def sample(run: RLRun) -> list:
    engine = run.engine()
    await engine.start()
    try:
        return await run.rollout(engine, 0)
    finally:
        await engine.close()


def data_sets(episodes: list) -> tuple[dict[str, list], dict]:
    """The three arms' training problems (solution = what is trained), and the sampling's counts."""
    accepted, _ = accepted_episodes(episodes)
    own = [dataclasses.replace(e.problem, solution=STEP_SEPARATOR.join(step.text for step in e.actions))
           for e in accepted]
    drawn = list({e.problem.id: e.problem for e in episodes}.values())
    solved = {e.problem.id for e in accepted}
    counts = {"samples": len(episodes), "correct": sum(e.correct for e in episodes), "accepted": len(accepted),
              "questions": len(drawn), "questions_solved": len(solved)}
    return {"own": own, "gold_same": [p for p in drawn if p.id in solved], "gold_all": drawn}, counts


def fine_tunes(start: Path, sets: dict[str, list], schedules: list[tuple[float, int, int]], val: list,
               tmp: Path, seeds: tuple[int, ...] = (1,)) -> dict[str, dict]:
    """`openr train sft`'s loop from `start` on each non-empty data set (`solution`
    is what is trained), once per schedule and fine-tuning seed (the batches'
    order), each graded greedily on `val`. A model's key names its seed only
    when there are several."""
    models = {}
    for lr, steps, warmup in schedules:
        for arm, data in sets.items():
            for seed in seeds if data else ():
                out = tmp / f"{arm}-{lr}-{steps}-{seed}"
                sft = SFTConfig(init_from=str(start), max_steps=steps, warmup_steps=warmup, learning_rate=lr,
                                seed=seed)
                trained = train_policy(sft, out, problems=data)
                key = f"{arm} lr={lr:g} steps={steps}" + (f" seed={seed}" if len(seeds) > 1 else "")
                models[key] = {
                    "arm": arm, "learning_rate": lr, "steps": steps, "warmup_steps": warmup, "seed": seed,
                    "examples": len(data), "final_loss": round(trained["final_loss"], 5),
                    "minutes": round(trained["minutes"], 2), **grade(out, val)}
    return models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=512, help="RL training questions sampled (default 512)")
    parser.add_argument("--group-size", type=int, default=8, help="samples per question at T=1 (default 8)")
    parser.add_argument("--seed", type=int, default=11, help="the sampling round's seed (default 11)")
    parser.add_argument("--schedules", type=schedule, nargs="+", default=[schedule("1e-3:75:10"),
                                                                           schedule("1e-4:75:10")],
                        help="fine-tuning schedules LR:STEPS:WARMUP of batches of 16 (default: 1e-3:75:10, SFT's "
                             "peak rate, and 1e-4:75:10; 75 steps are about three passes over the accepted "
                             "samples)")
    parser.add_argument("--start", type=Path, default=START, help="the starting policy (default: the shipped one)")
    parser.add_argument("--val-problems", type=int, default=500, help="arith-val problems graded (default: all 500)")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    for flag in ("questions", "group_size", "val_problems"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    val = arith.validation_split()[: args.val_problems]
    config = RLConfig(algo="expert-iteration", questions_per_iteration=args.questions, group_size=args.group_size,
                      seed=args.seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        run = RLRun(config, args.start, None, Path(tmp) / "rl", rl_train_problems(config.train_problems), val[:1])
        episodes = asyncio.run(sample(run))
        sets, counts = data_sets(episodes)
        counts["minutes"] = round((time.monotonic() - began) / 60, 2)
        del run, episodes
        models = {"start": grade(args.start, val), **fine_tunes(args.start, sets, args.schedules, val, Path(tmp))}
    figures = {"split": "arith-val", "problems": len(val), "start": label(args.start), "threads":
               torch.get_num_threads(), "sampling": {"questions": args.questions, "group_size": args.group_size,
                                                     "temperature": config.temperature, **counts},
               "models": models}
    record = write_result(args.out, "rl_rft_control", argv, args.note, figures)
    print(json.dumps({name: m["accuracy"] for name, m in record["models"].items()}, indent=2))


if __name__ == "__main__":
    main()
