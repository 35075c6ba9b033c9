"""The model card's RL ablations: which piece of GRPO, swapped, changes what it does to a policy.

Every variant starts from the same policy, trains on the arith training
stream `openr train rl` uses, and is graded greedily on the first
`--eval-problems` of the held-out split every `--eval-every` rounds (the clock
stops while it grades). A round is `--questions` x `--group` samples for every
variant, so curves line up by samples: a sampling variant plays that many
episodes, a gold variant takes that many distinct gold solutions. All share
the card's setting: no KL penalty (no reference policy), learning-rate warmup
over the first 2 rounds (none for plain SFT, which starts a fresh AdamW at
`--lr` as the card's run did), 32 samples per optimizer step, one pass.

The variants are `openr.rl.trainer.RLRun` with one piece swapped through its
hooks (`make_optimizer`, `advantage_transform`, the questions given to
`rollout`), except `sft-gold-adamw`, which is the SFT loss on RLRun's own
model and AdamW. Questions, sampling and minibatch order come from the seed
and the round (`round_seed`), and torch is reseeded before each variant, so
the same command gives the same numbers on the same machine, whichever
variants run beside it.

Writes OUT/results.json (each variant's curve: round, optimizer steps,
samples, training minutes, accuracy) and OUT/table.md (one row per variant,
as the model card's table). To reproduce the card, see bench/README.md.

    python -m bench.rl_ablations --variants grpo-outcome grpo-muon --rounds 12 --eval-every 4 --out runs/abl
    python -m bench.rl_ablations --merge runs/abl runs/abl-sft --out bench/results/rl_ablations
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.rl_baseline import training_curve
from openr.contracts import Step
from openr.engine.checkpoints import materialize, split_bundle
from openr.engine.hf_engine import HFEngine
from openr.hardware import machine_info
from openr.rl.commands import rl_train_problems
from openr.rl.config import RLConfig
from openr.rl.rollout import run_solutions
from openr.rl.trainer import AdvantageTransform, RLRun, draw_problems
from openr.tasks import arith
from openr.training.muon import OptimizerGroup
from openr.training.policy_accuracy import engine_grades
from openr.training.sft import SFTConfig, collate, encode_examples, make_optimizers

KL_COEF = 0.0  # the card's runs: no reference policy, so nothing holds the policy but the learning rate
WARMUP_ROUNDS = 2  # rounds of linear learning-rate warmup (RL variants)
GREEDY_WRONG_DRAW = 3  # questions drawn per question kept by grpo-positive-greedy-wrong (the card: 48 for 16)


def positive_part(episodes, advantages: list[list[float]]) -> list[list[float]]:
    """Wrong samples are not pushed down: negative advantages become 0."""
    return [[max(a, 0.0) for a in steps] for steps in advantages]


def advantage_one(episodes, advantages: list[list[float]]) -> list[list[float]]:
    """Every step of every (gold) episode reinforced alike, as SFT weighs its tokens."""
    return [[1.0] * len(steps) for steps in advantages]


@dataclass(frozen=True)
class Variant:
    """One ablation: what it tests, and which piece of GRPO it swaps."""

    name: str
    tests: str
    reward: str = "outcome"  # RLConfig.reward
    advantages: AdvantageTransform | None = None  # RLRun's advantage_transform
    greedy_wrong: bool = False  # train only on questions the policy's greedy answer gets wrong
    muon: bool = False  # the SFT's optimizer instead of RL's AdamW
    gold: bool = False  # gold solutions with advantage 1 instead of samples
    sft: bool = False  # the plain SFT loss on gold solutions instead of RL's update


VARIANTS = {v.name: v for v in (
    Variant("grpo-outcome", "the baseline: GRPO with a 0/1 reward for a correct final answer"),
    Variant("grpo-prm", "a dense reward: the PRM's score of each step, process advantages (reward-to-go)",
            reward="prm"),
    Variant("grpo-positive", "whether pushing down wrong samples is what hurts: negative advantages set to 0",
            advantages=positive_part),
    Variant("grpo-positive-greedy-wrong", "the same, only on questions greedy decoding gets wrong, where "
            "greedy accuracy can move", advantages=positive_part, greedy_wrong=True),
    Variant("grpo-muon", "whether RL's fresh AdamW is to blame: the SFT's optimizer (Muon on the hidden "
            "matrices, AdamW on embedding and norms)", muon=True),
    Variant("gold-through-rl", "whether RL's update path is sound: advantage 1 on gold solutions, i.e. SFT "
            "through the clipped RL loss", advantages=advantage_one, gold=True),
    Variant("sft-gold-adamw", "how far any fresh optimizer step moves this policy: plain SFT on gold "
            "solutions, a fresh AdamW", gold=True, sft=True),
)}


def sft_optimizer(adamw_lr: float):
    """RLRun's `make_optimizer`: the SFT's own split (`openr.training.sft.make_optimizers`),
    Muon at the run's learning rate without weight decay, AdamW at `adamw_lr`;
    RL's warmup scales both."""

    def make(model: torch.nn.Module, config: RLConfig) -> OptimizerGroup:
        muon, adamw = make_optimizers(model, SFTConfig(learning_rate=config.learning_rate, weight_decay=0.0))
        for group in adamw.param_groups:
            group["lr"] = adamw_lr
        return OptimizerGroup(muon, adamw)

    return make


class GoldSolutions:
    """A `Policy` whose one "sample" per prefix is its problem's gold solution,
    so gold episodes are played into the environment exactly as samples are."""

    def __init__(self, problems):
        self.solutions = [p.solution for p in problems]

    async def generate_steps(self, prefixes, n, stop, max_tokens, temperature, top_p=1.0, seed=None):
        if len(prefixes) != len(self.solutions) or n != 1:
            raise ValueError("GoldSolutions answers one call: one prefix per problem, n=1")
        return [[Step(solution, 0, "eos", 0.0)] for solution in self.solutions]


def gold_problems(run: RLRun, iteration: int) -> list:
    """The round's questions x group distinct problems, seeded as RLRun draws."""
    config = run.config
    wide = dataclasses.replace(config, questions_per_iteration=config.questions_per_iteration * config.group_size)
    return draw_problems(run.train_pool, wide, iteration)


async def greedy_wrong_questions(run: RLRun, engine: HFEngine, iteration: int) -> list:
    """Up to `questions` of GREEDY_WRONG_DRAW x as many drawn, those greedy decoding gets wrong."""
    config = run.config
    wide = dataclasses.replace(config, questions_per_iteration=config.questions_per_iteration * GREEDY_WRONG_DRAW)
    drawn = draw_problems(run.train_pool, wide, iteration)
    run.model.eval()
    grades = await engine_grades(engine, drawn, progress=False)
    return [p for p, right in zip(drawn, grades) if not right][: config.questions_per_iteration]


async def rl_round(run: RLRun, engine: HFEngine, variant: Variant, iteration: int) -> tuple[int, int]:
    """One round through RLRun's update; returns (samples, optimizer steps)."""
    if variant.gold:
        problems = gold_problems(run, iteration)
        envs = run.make_envs(len(problems))
        envs.reset(problems)
        episodes = await run_solutions(envs, GoldSolutions(problems), run.config.temperature)
    else:
        problems = await greedy_wrong_questions(run, engine, iteration) if variant.greedy_wrong else None
        if problems == []:
            return 0, 0  # greedy got every drawn question right: nothing to train on this round
        episodes = await run.rollout(engine, iteration, problems)
    run.update(episodes, iteration)
    return len(episodes), math.ceil(len(episodes) / run.config.minibatch_size) * run.config.update_epochs


def sft_round(run: RLRun, iteration: int) -> tuple[int, int]:
    """Cross-entropy on the round's gold solutions with RLRun's model and AdamW, at a constant rate."""
    examples = encode_examples(run.tokenizer, gold_problems(run, iteration))
    size = run.config.minibatch_size
    run.model.train()
    for start in range(0, len(examples), size):
        loss = run.model(**collate(examples[start : start + size], run.pad_id)).loss
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
        run.optimizer.step()
    return len(examples), math.ceil(len(examples) / size)


async def train_variant(run: RLRun, variant: Variant, rounds: int, eval_every: int) -> list[dict]:
    async def train_round(engine: HFEngine, iteration: int) -> tuple[int, int]:
        return sft_round(run, iteration) if variant.sft else await rl_round(run, engine, variant, iteration)

    return await training_curve(run, variant.name, rounds, eval_every, train_round)


def run_variant(variant: Variant, args: argparse.Namespace, policy: Path, prm: str | None, pool,
                held_out) -> dict:
    lr = args.muon_lr if variant.muon else args.lr
    config = RLConfig(algo="grpo", reward=variant.reward, questions_per_iteration=args.questions,
                      group_size=args.group, learning_rate=lr, kl_coef=KL_COEF, warmup_iterations=WARMUP_ROUNDS,
                      seed=args.seed)
    optimizer = sft_optimizer(args.muon_adamw_lr) if variant.muon else None
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as out:
        run = RLRun(config, policy, prm, out, pool, held_out, make_optimizer=optimizer,
                    advantage_transform=variant.advantages)
        curve = asyncio.run(train_variant(run, variant, args.rounds, args.eval_every))
    optimizer_text = f"Muon {rate(lr)}, AdamW {rate(args.muon_adamw_lr)}" if variant.muon else f"AdamW {rate(lr)}"
    return {"variant": variant.name, "tests": variant.tests, "policy": str(policy), "optimizer": optimizer_text,
            "unit": "steps" if variant.sft else "rounds", "eval_problems": len(held_out),
            "questions": args.questions, "group": args.group, "seed": args.seed, "curve": curve}


def rate(lr: float) -> str:
    """A learning rate as the card writes it: 1e-4, 2.5e-4."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def accuracy_path(run: dict) -> str:
    """`48.0 → 37.0 (5 rounds) → 37.5 (10)`, as the model card writes a curve."""
    points = run["curve"]
    text = f"{100 * points[0]['accuracy']:.1f}"
    for k, point in enumerate(points[1:]):
        at = point["steps"] if run["unit"] == "steps" else point["round"]
        unit = run["unit"] if at != 1 else run["unit"].removesuffix("s")
        label = f"{at} {unit}" if k == 0 else f"{at}"  # the unit once, on the first point
        text += f" → {100 * point['accuracy']:.1f} ({label})"
    return text


def write_report(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| variant | what it tests | optimizer, lr | held-out greedy accuracy (%) | eval problems | samples "
             "| training minutes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['variant']} | {r['tests']} | {r['optimizer']} | {accuracy_path(r)} | {r['eval_problems']} "
              f"| {r['curve'][-1]['samples']:,} | {r['curve'][-1]['minutes']:.1f} |" for r in results["runs"]]
    policies = ", ".join(f"`{p}`" for p in dict.fromkeys(r["policy"] for r in results["runs"]))
    (out / "table.md").write_text(f"From {policies}.\n\n" + "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    epilog = "variants:\n" + "\n".join(f"  {v.name:28} {v.tests}" for v in VARIANTS.values())
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]), epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", metavar="DIR",
                        help="policy checkpoint, or bundle (policy/ + prm/), every variant starts from (default: "
                             "the shipped openr-arith bundle; the card used its float32 retrain, `openr train "
                             "arith --out DIR --dtype float32`)")
    parser.add_argument("--prm", metavar="DIR", help="PRM checkpoint for grpo-prm (default: the bundle's prm/)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME",
                        help="variants to run, one after another (listed below; default: all)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per variant (default: %(default)s)")
    parser.add_argument("--questions", type=int, default=16, help="questions per round (default: %(default)s)")
    parser.add_argument("--group", type=int, default=8, help="samples per question (GRPO's G; default: "
                                                             "%(default)s); gold variants take questions x group "
                                                             "gold solutions per round")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of every variant but grpo-muon "
                                                                "(default: %(default)g)")
    parser.add_argument("--muon-lr", type=float, default=3e-4, help="grpo-muon: Muon's rate on the hidden "
                                                                     "matrices (default: %(default)g)")
    parser.add_argument("--muon-adamw-lr", type=float, default=1e-5,
                        help="grpo-muon: AdamW's rate on the embedding and norm gains (default: "
                             "%(default)g)")
    parser.add_argument("--eval-every", type=int, default=4,
                        help="rounds between held-out evaluations (default: %(default)s)")
    parser.add_argument("--eval-problems", type=int, default=200, help="held-out problems graded greedily: the "
                                                                       "first N of arith.test_split() (default: "
                                                                       "%(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of questions, sampling, minibatches and torch (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/rl_ablations"),
                        help="directory for results.json and table.md (default: %(default)s)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                        help="write one report from the results.json of several runs (no training)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.merge:
        runs = [json.loads((d / "results.json").read_text()) for d in args.merge]
        write_report(args.out, {**runs[0], "runs": [r for run in runs for r in run["runs"]],
                                "merged_from": [str(d) for d in args.merge]})
        print((args.out / "table.md").read_text())
        return
    if min(args.rounds, args.questions, args.eval_every, args.eval_problems) <= 0 or args.group < 2:
        parser.error("--rounds, --questions, --eval-every and --eval-problems must be positive, --group at least 2")
    policy_arg, bundled_prm = split_bundle(args.policy)
    policy, prm = materialize(policy_arg), args.prm or bundled_prm
    pool = rl_train_problems(RLConfig.train_problems)
    held_out = arith.test_split()[: args.eval_problems]
    runs = [run_variant(VARIANTS[name], args, policy, prm, pool, held_out) for name in args.variants]
    write_report(args.out, {"policy": str(policy), "prm": prm, "machine": machine_info(),
                            "config": vars(args) | {"out": str(args.out), "merge": None}, "runs": runs})
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
