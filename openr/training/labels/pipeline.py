"""Automatic process supervision: Monte Carlo step labels for training a PRM.

The steps of a policy's own solutions are labelled with rollouts (Math-Shepherd
or OmegaPRM) and written as a PRM training set. This is the driver both methods
share: it runs several problems at once on one event loop (so the engine batches
rollouts across problems), appends each problem's records to a JSONL file (in
TRL's stepwise format or Math-Shepherd's tagged one) as soon as the problem is
done, resumes after an interruption, and reports what the labels cost.

Run: `openr train label --method omegaprm --model DIR --out FILE.jsonl`, or
`--dataset train.jsonl --model http://host:8000/v1` for your problems and server.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from tqdm.auto import tqdm

from openr.cli_flags import add_config_flags, add_flag, positive_int, step_separator
from openr.contracts import Policy
from openr.tasks import arith, load_problems
from openr.tasks.problem import Problem
from openr.training.labels import omegaprm, shepherd
from openr.training.labels.formats import OUTPUT_FORMATS, TRL, check_format
from openr.training.labels.monte_carlo import LABEL_TYPES, ChatPolicy, ProblemLabels, RolloutConfig

# The sidecar that marks a problem finished: one {"id", "records"} line per problem,
# written after its records, so a crash between the two writes is detectable.
DONE_SUFFIX = ".done"
SECONDS_PER_MINUTE = 60
ARITH_PROBLEMS = 100  # arith training problems labelled when no --dataset is given
DEFAULT_MAX_REQUESTS = 64  # requests at once to each URL: a policy and a completer on one openr serve fit its queue


@dataclass(frozen=True)
class LabelMethod:
    """A labelling method: the config it takes and the coroutine that labels one problem."""

    config_class: type[RolloutConfig]
    label_problem: Callable[[ChatPolicy, Problem, RolloutConfig, Policy | None], Awaitable[ProblemLabels]]


METHODS: dict[str, LabelMethod] = {
    shepherd.METHOD: LabelMethod(shepherd.ShepherdConfig, shepherd.label_problem),
    omegaprm.METHOD: LabelMethod(omegaprm.OmegaPRMConfig, omegaprm.label_problem),
}


@dataclass
class LabelStats:
    """What one `label_problems` run did and spent (problems resumed from the file excluded)."""

    problems: int = 0
    records: int = 0
    steps: int = 0  # labels written
    measured_steps: int = 0  # labels estimated from the step's own prefix, not inferred
    completions: int = 0  # sampled completions: policy calls
    tokens: int = 0  # generated tokens
    seconds: float = 0.0

    def add(self, labels: ProblemLabels) -> None:
        self.problems += 1
        self.records += len(labels.records)
        self.steps += sum(len(r["labels"]) for r in labels.records)
        self.measured_steps += sum(sum(r["measured"]) for r in labels.records)
        self.completions += labels.usage.completions
        self.tokens += labels.usage.tokens

    @property
    def steps_per_minute(self) -> float:
        return self.steps / self.seconds * SECONDS_PER_MINUTE if self.seconds else 0.0

    @property
    def completions_per_second(self) -> float:
        return self.completions / self.seconds if self.seconds else 0.0

    @property
    def completions_per_step(self) -> float:
        return self.completions / self.steps if self.steps else float("inf")

    def summary(self) -> dict:
        """The counts and both rates, JSON-ready (no step labelled: no cost per step)."""
        per_step = round(self.completions_per_step, 2) if self.steps else None
        return {**dataclasses.asdict(self), "steps_per_minute": round(self.steps_per_minute, 1),
                "completions_per_second": round(self.completions_per_second, 2), "completions_per_step": per_step}


def done_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + DONE_SUFFIX)


def _read_json_lines(path: Path) -> list[tuple[str, dict]]:
    """(raw line, parsed object) for every whole line; a line torn by a crash is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append((line, json.loads(line)))
        except json.JSONDecodeError:
            continue
    return rows


def _keep_only(path: Path, lines: list[str]) -> None:
    """Make `path` hold exactly `lines`, replacing it atomically if it differs."""
    text = "".join(line + "\n" for line in lines)
    if path.exists() and path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def finished_problems(out_path: Path) -> set[str]:
    """Ids of problems whose records are all in `out_path`. Records of any other
    problem (cut off by an interruption) and torn lines are removed from the file."""
    rows = _read_json_lines(out_path)
    marks = _read_json_lines(done_path(out_path))
    counts = Counter(record["id"] for _, record in rows)
    claimed = {mark["id"]: mark["records"] for _, mark in marks}
    finished = {pid for pid, n in claimed.items() if counts[pid] == n}
    _keep_only(out_path, [line for line, record in rows if record["id"] in finished])
    _keep_only(done_path(out_path), [line for line, mark in marks if mark["id"] in finished])
    return finished


def _append(out_path: Path, problem: Problem, records: list[dict], output_format: str) -> None:
    line = OUTPUT_FORMATS[output_format].line
    with out_path.open("a") as f:
        f.writelines(json.dumps(line(record, problem.source)) + "\n" for record in records)
    with done_path(out_path).open("a") as f:
        f.write(json.dumps({"id": problem.id, "records": len(records)}) + "\n")


async def label_problems(method: str, policy: ChatPolicy, problems: Sequence[Problem], config: RolloutConfig,
                         out_path: str | Path, progress: bool = True, completer: Policy | None = None,
                         output_format: str = TRL) -> LabelStats:
    """Label every problem not already finished in `out_path`, appending its records there
    in `output_format` (a name in OUTPUT_FORMATS). `completer` (default: the policy)
    writes the continuations that estimate each prefix.

    Up to `config.max_concurrent_problems` problems run at once; each is written
    as soon as it is done, so an interrupted run loses only the problems in flight.
    Resuming goes by problem id, so give each method (and setting) a file of its own.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    spec = METHODS[method]
    if not isinstance(config, spec.config_class):
        raise TypeError(f"{method} needs a {spec.config_class.__name__}, got {type(config).__name__}")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique: the output file is resumed by id")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    finished = finished_problems(out_path)
    check_format(output_format, next((record for _, record in _read_json_lines(out_path)), None))
    todo = [p for p in problems if p.id not in finished]

    stats, start = LabelStats(), time.monotonic()
    slots = asyncio.Semaphore(config.max_concurrent_problems)
    bar = tqdm(total=len(todo), desc=method, unit="problem", disable=not progress)

    async def label_one(problem: Problem) -> None:
        async with slots:
            labels = await spec.label_problem(policy, problem, config, completer)
        _append(out_path, problem, labels.records, output_format)
        stats.add(labels)
        stats.seconds = time.monotonic() - start
        bar.update(1)
        bar.set_postfix(steps=stats.steps, completions_per_s=f"{stats.completions_per_second:.1f}",
                        calls_per_step=f"{stats.completions_per_step:.1f}")

    try:
        # A TaskGroup cancels the other problems if one fails, rather than leaving them running.
        async with asyncio.TaskGroup() as group:
            for problem in todo:
                group.create_task(label_one(problem))
    finally:
        bar.close()
    stats.seconds = time.monotonic() - start
    return stats


def _config_from_args(config_class: type[RolloutConfig], args: dict) -> RolloutConfig:
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{name: value for name, value in args.items() if name in names and value is not None})


HELP_EPILOG = """\
The policy and the completer are each a local checkpoint (directory or alias,
run in process by --engine) or the URL of an OpenAI-compatible server with
raw-prompt completions and /tokenize (vLLM, `openr serve`), e.g.
http://host:8000/v1: rollouts are then sent there.

examples:
  # the arith world, in process
  openr train label --method math_shepherd --model openr-arith --out labels.jsonl
  # your GSM8K- or MATH-format jsonl, rollouts on a vLLM server, Math-Shepherd's format
  openr train label --method math_shepherd --dataset train.jsonl --model http://host:8000/v1 \\
      --format math-shepherd --out labels.jsonl
  # a chat model that writes one step a line (SmolLM2): its steps end at '\\n'
  openr train label --method math_shepherd --dataset train.jsonl --model smollm2-135m-instruct \\
      --step-separator '\\n' --out labels.jsonl

Rerunning with the same --out continues where the last run stopped (problems
finished are kept, problems cut off are redone). The summary printed at the end
counts what this run did: problems, records, steps labelled, completions sampled
and completions a second.
"""


def main(argv: list[str] | None = None) -> None:
    """Command line: label a dataset (or arith training problems) with a policy
    checkpoint or server. Every field of either method's config is a
    `--kebab-case` flag; unset flags keep the method's defaults."""
    parser = argparse.ArgumentParser(prog="openr train label", description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--model", required=True, help="Policy: a checkpoint directory or alias, or the URL of an "
                                                       "OpenAI-compatible server (http://host:port/v1).")
    parser.add_argument("--out", required=True, help="JSONL file to append records to (resumed if it exists).")
    parser.add_argument("--dataset", help="JSONL of problems with final answers, in a format `openr eval` reads "
                                          "(GSM8K: question/answer with '#### N'; MATH500; MATH: "
                                          "problem/final_answer); graded with math-verify. Default: arith "
                                          "training problems.")
    parser.add_argument("--format", default=TRL, choices=sorted(OUTPUT_FORMATS),
                        help=f"Output: {TRL} (TRL stepwise: prompt, completions, labels) or math-shepherd "
                             "(input/label text, steps ending in ' ки', labels + / -).")
    parser.add_argument("--completer", help="Checkpoint or server URL that writes the continuations (default: "
                                            "the policy); it must share the policy's chat template.")
    parser.add_argument("--engine", default="hf", choices=("hf", "vllm"),
                        help="Backend of a local checkpoint (a URL always goes to the server).")
    parser.add_argument("--device", default="cpu", help="Device of a local policy.")
    parser.add_argument("--max-requests", type=positive_int, default=DEFAULT_MAX_REQUESTS,
                        help="Requests sent at once to a policy or completer URL, each (the rest wait here). "
                             "--max-concurrent-problems times k rollouts can far outnumber what a server queues: "
                             f"`openr serve` turns away more than 32 running and 128 waiting by default, and the "
                             f"default {DEFAULT_MAX_REQUESTS} for each of a policy and a completer fits that. "
                             "Raise it for a vLLM pool, which queues everything.")
    parser.add_argument("--api-key", default=os.environ.get("OPENR_REMOTE_API_KEY"),
                        help="API key of a policy or completer URL (default: $OPENR_REMOTE_API_KEY).")
    add_flag(parser, "--num-problems", old=["--num_problems"], type=int, default=None,
             help=f"Problems to label: the first N of --dataset (default: all), or N arith training problems "
                  f"(default: {ARITH_PROBLEMS}).")
    add_flag(parser, "--problem-seed", old=["--problem_seed"], type=int, default=0,
             help="Seed of the arith training problems.")
    added: set[str] = set()
    for spec in METHODS.values():
        add_config_flags(parser, spec.config_class, choices={"label_type": LABEL_TYPES}, exclude=added,
                         keep_defaults=False, parsers={"step_separator": step_separator})
        added |= {f.name for f in dataclasses.fields(spec.config_class)}
    args = vars(parser.parse_args(argv))
    config = _config_from_args(METHODS[args["method"]].config_class, args)
    if args["dataset"]:
        problems = load_problems(args["dataset"], limit=args["num_problems"])
    else:
        problems = arith.train_problems(args["num_problems"] or ARITH_PROBLEMS, seed=args["problem_seed"])
    print(json.dumps(asyncio.run(_run(args, config, problems)).summary(), indent=2))


def _engine(model: str, args: dict):
    """The engine a --model or --completer names: the remote one for a URL, else a
    checkpoint run in process (a bundle such as openr-arith gives its policy)."""
    from openr.engine import make_engine
    from openr.engine.checkpoints import split_bundle

    if model.startswith(("http://", "https://")):
        return make_engine("openai", model, "cpu", remote_api_key=args["api_key"],
                           remote_max_in_flight=args["max_requests"])
    return make_engine(args["engine"], split_bundle(model)[0], args["device"])


async def _run(args: dict, config: RolloutConfig, problems: list[Problem]) -> LabelStats:
    engine = _engine(args["model"], args)
    completer = _engine(args["completer"], args) if args["completer"] else None
    try:
        await engine.start()
        if completer is not None:
            await completer.start()
        return await label_problems(args["method"], engine, problems, config, args["out"], completer=completer,
                                    output_format=args["format"])
    finally:
        await engine.close()
        if completer is not None:
            await completer.close()


if __name__ == "__main__":
    main()
