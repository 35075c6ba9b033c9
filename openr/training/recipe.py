"""`openr train arith`: OpenR's whole loop on a CPU, in one command.

policy SFT -> verifier SFT (the same recipe trained longer: a strong arith model)
-> greedy accuracy of both on the held-out split -> automatic step labels of the
policy's solutions (Math-Shepherd, with the verifier as the completer, plus
OmegaPRM on a few problems for the cost comparison) -> PRMs trained on those
labels: the served one, the verifier calibrated as a likelihood PRM
(openr.prm.likelihood), and for comparison a step-tag PRM started from the
verifier -> quality of both (ProcessBench F1, step AUROC) on the policy's own
held-out solutions. Each stage writes into OUT and is skipped when its output
is already there, so an interrupted run resumes. OUT/policy + OUT/prm is a
bundle `openr serve --model OUT` serves.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from openr.hardware import machine_info
from openr.tasks import arith
from openr.training.labels.omegaprm import OmegaPRMConfig
from openr.training.labels.shepherd import ShepherdConfig
from openr.training.prm_train import PRMTrainConfig
from openr.training.sft import SFTConfig

SUMMARY_FILE = "summary.json"
LABEL_PROBLEM_SEED = 1  # SFT draws its problems with seed 0; labels come from another stream


@dataclass(frozen=True)
class ArithRecipe:
    """Every knob of the recipe; `PRESETS` holds the committed one and a tiny one for tests."""

    sft: SFTConfig = field(default_factory=SFTConfig)
    # The verifier writes Math-Shepherd's continuations and becomes the PRM; it
    # must be much stronger than the policy for labels to mean "this step is
    # right". 2500 steps take about 9 minutes on 2 cores (84% greedy accuracy).
    verifier: SFTConfig = field(default_factory=lambda: SFTConfig(max_steps=2500))
    label: ShepherdConfig = field(default_factory=ShepherdConfig)
    omegaprm: OmegaPRMConfig = field(default_factory=OmegaPRMConfig)
    prm: PRMTrainConfig = field(default_factory=PRMTrainConfig)  # the step-tag PRM trained for comparison
    label_problems: int = 400  # Math-Shepherd-labelled problems both PRMs learn from
    omegaprm_problems: int = 30  # labelled with OmegaPRM too, to compare the two methods' cost
    eval_problems: int = 500  # held-out problems for greedy accuracy (the whole test split)
    prm_eval_problems: int = 150  # held-out problems whose sampled solutions measure the PRM
    prm_eval_samples: int = 4  # solutions sampled per held-out problem for the PRM measurement
    step_tag_prm: bool = True  # also train a step-tag PRM on the same labels, to compare with the verifier


PRESETS = {
    # The policy trains for a fixed number of steps (about 4 minutes on 2 cores),
    # which lands its greedy accuracy mid-range so it still makes step errors.
    "full": ArithRecipe(
        label=ShepherdConfig(k=4, samples_per_problem=2, max_concurrent_problems=8),
        prm=PRMTrainConfig(num_epochs=4),
        label_problems=300, omegaprm_problems=20),
    "tiny": ArithRecipe(
        sft=SFTConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64, max_len=512, batch_size=8,
                      max_steps=20, warmup_steps=2, num_train_problems=200),
        verifier=SFTConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64, max_len=512,
                           batch_size=8, max_steps=30, warmup_steps=2, num_train_problems=200),
        label=ShepherdConfig(k=2, samples_per_problem=1, max_tokens=96, max_concurrent_problems=2),
        omegaprm=OmegaPRMConfig(k=2, max_tokens=96, max_concurrent_problems=2),
        prm=PRMTrainConfig(max_steps=6, batch_size=4, logging_steps=2, max_len=512),
        label_problems=3, omegaprm_problems=2, eval_problems=4, prm_eval_problems=3, prm_eval_samples=1),
}


def with_dtype(recipe: ArithRecipe, dtype: str) -> ArithRecipe:
    """The recipe with every training stage (policy, verifier, step-tag PRM) in `dtype`."""
    return replace(recipe, sft=replace(recipe.sft, dtype=dtype), verifier=replace(recipe.verifier, dtype=dtype),
                   prm=replace(recipe.prm, dtype=dtype))


def run_recipe(recipe: ArithRecipe, out_dir: str | Path, progress: bool = True) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = _load_summary(out)
    # The machine of this invocation; each training stage records its own too,
    # so a run resumed elsewhere still says where every minute was spent.
    summary["machine"] = machine_info()
    timed = _Timer(summary)
    policy_dir, verifier_dir, labels_dir = out / "policy", out / "verifier", out / "labels"
    prm_dir, step_tag_dir = out / "prm", out / "prm-step-tag"

    for name, config, checkpoint, accuracy in (("sft", recipe.sft, policy_dir, "greedy_accuracy"),
                                               ("verifier_sft", recipe.verifier, verifier_dir,
                                                "verifier_greedy_accuracy")):
        if not (checkpoint / "config.json").exists():
            from openr.training.sft import train_policy

            with timed(name):
                summary[name] = _plain(train_policy(config, checkpoint, progress=progress))
        if accuracy not in summary:
            from openr.training.policy_accuracy import greedy_accuracy

            with timed(f"{name}_eval"):
                summary[accuracy] = greedy_accuracy(checkpoint, arith.test_split()[: recipe.eval_problems],
                                                    progress=progress)
        _save_summary(out, summary)

    if "labels" not in summary:  # an interrupted labelling run resumes inside label_problems
        problems = arith.train_problems(recipe.label_problems, seed=LABEL_PROBLEM_SEED)
        with timed("labels"):
            summary["labels"] = asyncio.run(_label(policy_dir, verifier_dir, labels_dir, problems, recipe, progress))
        _save_summary(out, summary)
    labels_file = labels_dir / "math_shepherd.jsonl"

    if not (prm_dir / "config.json").exists():
        from openr.prm.likelihood import make_verifier
        from openr.training.prm_quality import load_step_records

        with timed("prm"):
            summary["prm"] = make_verifier(verifier_dir, load_step_records([labels_file]), prm_dir)
        _save_summary(out, summary)
    if recipe.step_tag_prm and not (step_tag_dir / "config.json").exists():
        from openr.training.prm_train import train_prm

        with timed("step_tag_prm"):
            trained = train_prm(replace(recipe.prm, init_from=str(verifier_dir)), [labels_file], step_tag_dir,
                                progress=progress)
            summary["step_tag_prm"] = {k: v for k, v in trained.items() if k != "losses"}
            summary["step_tag_prm"]["first_loss"] = trained["losses"][0]
            summary["step_tag_prm"]["last_loss"] = trained["losses"][-1]
        _save_summary(out, summary)

    if "prm_quality" not in summary:
        with timed("prm_eval"):
            prms = {"prm_quality": prm_dir}
            if recipe.step_tag_prm:
                prms["step_tag_prm_quality"] = step_tag_dir
            summary.update(_prm_quality(policy_dir, prms, recipe, progress))
    _save_summary(out, summary)
    return summary


async def _label(policy_dir: Path, verifier_dir: Path, labels_dir: Path, problems, recipe: ArithRecipe,
                 progress: bool) -> dict:
    from openr.engine.hf_engine import HFEngine
    from openr.training.labels.pipeline import label_problems

    policy, completer = HFEngine(str(policy_dir)), HFEngine(str(verifier_dir))
    await policy.start()
    await completer.start()
    try:
        shepherd = await label_problems("math_shepherd", policy, problems, recipe.label,
                                        labels_dir / "math_shepherd.jsonl", progress=progress, completer=completer)
        result = {"math_shepherd": shepherd.summary()}
        if recipe.omegaprm_problems:
            omega = await label_problems("omegaprm", policy, problems[: recipe.omegaprm_problems], recipe.omegaprm,
                                         labels_dir / "omegaprm.jsonl", progress=progress, completer=completer)
            result["omegaprm"] = omega.summary()
        return result
    finally:
        await policy.close()
        await completer.close()


def _prm_quality(policy_dir: Path, prms: dict[str, Path], recipe: ArithRecipe, progress: bool) -> dict:
    """Metrics of each named PRM checkpoint on the same held-out policy solutions."""
    from openr.prm import load_prm
    from openr.training.prm_quality import evaluate_prm, policy_records

    held_out = arith.test_split()[: recipe.prm_eval_problems]
    records = policy_records(policy_dir, held_out, samples_per_problem=recipe.prm_eval_samples, progress=progress)
    return {name: {**evaluate_prm(load_prm(checkpoint), records), "solutions": len(records)}
            for name, checkpoint in prms.items()}


class _Timer:
    """Adds each stage's minutes to the summary (stages skipped on resume keep theirs)."""

    def __init__(self, summary: dict):
        self.minutes = summary.setdefault("minutes", {})
        self._stage = None

    def __call__(self, stage: str) -> "_Timer":
        self._stage = stage
        return self

    def __enter__(self):
        self._start = time.monotonic()

    def __exit__(self, *exc):
        if exc[0] is None:
            self.minutes[self._stage] = round((time.monotonic() - self._start) / 60, 2)


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _load_summary(out: Path) -> dict:
    path = out / SUMMARY_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save_summary(out: Path, summary: dict) -> None:
    summary["minutes_total"] = round(sum(summary.get("minutes", {}).values()), 2)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


def describe(recipe: ArithRecipe) -> str:
    return json.dumps(asdict(recipe), indent=2, default=str)
