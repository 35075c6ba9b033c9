"""Resumable RL state and the final servable checkpoint.

Every `save_every` rounds the policy, value head, optimizer and run state go
to OUT/rl_state/round-NNNNNN/, and OUT/rl_state/latest names it (replaced
atomically, so a kill mid-save leaves the previous round). Rounds draw their
questions, sampling seeds and minibatch order from the seed and the round
number alone, so a resumed run repeats nothing and loses only the rounds since
the last save. The finished policy is written to OUT itself, a plain HF
checkpoint `openr serve --model OUT` serves; the policy of the best held-out
evaluation so far is kept in OUT/best/ (with best/held_out.json), so a run is
chosen at its best round on the validation split rather than at its last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.utils import logging as hf_logging

STATE_DIR = "rl_state"
LATEST = "latest"
CONFIG_FILE = "rl_config.json"
HISTORY_FILE = "history.jsonl"
SUMMARY_FILE = "summary.json"
BEST_DIR = "best"
BEST_FILE = "held_out.json"


@dataclass
class RunState:
    iteration: int = 0
    samples: int = 0
    minutes: float = 0.0
    history: list[dict] = field(default_factory=list)  # one metrics dict per round
    # {"iteration", "accuracy", "prm_reward", "probe_entropy", "by_level": {level: accuracy}}
    evals: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # question id -> [samples right, samples drawn], over every round so far
    passes: dict[str, list[int]] = field(default_factory=dict)

    def record_passes(self, episodes) -> None:
        for episode in episodes:
            right, drawn = self.passes.get(episode.problem.id, (0, 0))
            self.passes[episode.problem.id] = [right + int(episode.correct), drawn + 1]

    def settled_questions(self) -> frozenset[str]:
        """Questions whose samples so far were all right or all wrong: off the edge of competence."""
        return frozenset(q for q, (right, drawn) in self.passes.items() if right in (0, drawn))

    def record_eval(self, iteration: int, accuracy: float, probe_entropy: float | None = None,
                    by_level: dict[str, float] | None = None) -> str | None:
        """Record a held-out accuracy with the mean PRM reward of the rounds since
        the last eval; returns a warning when that reward rose while accuracy fell."""
        since = self.evals[-1]["iteration"] if self.evals else 0
        rewards = [m["prm_reward"] for m in self.history if since < m["iteration"] <= iteration and "prm_reward" in m]
        prm_reward = statistics.fmean(rewards) if rewards else None
        previous = next((e for e in reversed(self.evals) if e["prm_reward"] is not None), None)
        self.evals.append({"iteration": iteration, "accuracy": accuracy, "prm_reward": prm_reward,
                           "probe_entropy": probe_entropy, "by_level": by_level})
        if previous and prm_reward is not None and prm_reward > previous["prm_reward"] and \
                accuracy < previous["accuracy"]:
            warning = (f"possible reward hacking at round {iteration}: PRM reward {previous['prm_reward']:.3f} -> "
                       f"{prm_reward:.3f} while held-out accuracy {previous['accuracy']:.3f} -> {accuracy:.3f}")
            self.warnings.append(warning)
            return warning
        return None


def _write_policy(run, directory: Path) -> None:
    run.model.generation_config = GenerationConfig(eos_token_id=run.tokenizer.eos_token_id,
                                                   pad_token_id=run.tokenizer.pad_token_id)
    # transformers draws a bar for every save, which breaks the run's own progress bar into pieces
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        run.model.save_pretrained(directory)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    run.tokenizer.save_pretrained(directory)


def is_best(state: RunState) -> bool:
    """Whether the latest held-out evaluation beats every earlier one (the first always does)."""
    *earlier, latest = state.evals
    return all(latest["accuracy"] > e["accuracy"] for e in earlier)


def save_best(out: Path, run) -> None:
    """Keep the current policy as OUT/best/, with the evaluation that chose it."""
    directory = out / BEST_DIR
    staging = out / f"{BEST_DIR}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    _write_policy(run, staging)
    chosen = {**run.state.evals[-1], "samples": run.state.samples, "minutes": run.state.minutes}
    (staging / BEST_FILE).write_text(json.dumps(chosen, indent=2) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)


def save_state(out: Path, run) -> None:
    root = out / STATE_DIR
    directory = root / f"round-{run.state.iteration:06d}"
    if directory.exists():
        shutil.rmtree(directory)
    _write_policy(run, directory / "policy")
    torch.save(run.optimizer.state_dict(), directory / "optimizer.pt")
    if run.value_head is not None:
        torch.save(run.value_head.state_dict(), directory / "value_head.pt")
    (directory / "state.json").write_text(json.dumps(dataclasses.asdict(run.state)) + "\n")
    (directory / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(run.config), indent=2) + "\n")
    pointer = root / f"{LATEST}.tmp"
    pointer.write_text(directory.name)
    os.replace(pointer, root / LATEST)
    for old in root.glob("round-*"):
        if old != directory:
            shutil.rmtree(old)


def load_latest(out: Path, run) -> bool:
    """Restore the last saved round into `run`; False when there is none. A
    saved run with a different config is refused rather than mixed; a field
    added to the config since the save counts as its default, which the saved
    run ran with."""
    pointer = out / STATE_DIR / LATEST
    if not pointer.exists():
        return False
    directory = out / STATE_DIR / pointer.read_text().strip()
    defaults = {f.name: f.default for f in dataclasses.fields(run.config)}
    saved = defaults | json.loads((directory / CONFIG_FILE).read_text())
    current = dataclasses.asdict(run.config)
    if saved != current:
        changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
        raise ValueError(f"{out} holds a run with another config (differs in {changed}); use a new --out")
    model = AutoModelForCausalLM.from_pretrained(directory / "policy", dtype=torch.float32)
    run.model.load_state_dict(model.state_dict())
    run.optimizer.load_state_dict(torch.load(directory / "optimizer.pt"))
    if run.value_head is not None:
        run.value_head.load_state_dict(torch.load(directory / "value_head.pt"))
    run.state = RunState(**json.loads((directory / "state.json").read_text()))
    return True


def write_history(out: Path, state: RunState) -> None:
    """OUT/history.jsonl: every round's metrics so far, rewritten each round so a
    running (or killed) run can be read as it goes."""
    out.mkdir(parents=True, exist_ok=True)
    (out / HISTORY_FILE).write_text("".join(json.dumps(m) + "\n" for m in state.history))


def save_final(out: Path, run, summary: dict) -> None:
    _write_policy(run, out)
    (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(run.config), indent=2) + "\n")
    write_history(out, run.state)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
