"""The shapes a labelled set is written in: TRL's stepwise supervision (what
`openr train prm` and TRL's PRMTrainer read) or Math-Shepherd's tagged text
(what peiyi9979/Math-Shepherd publishes and its PRM is trained on).

Labellers produce TRL records; a format turns each into one output line. Every
line keeps the problem's `id`, which is what an interrupted run resumes by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from openr.prm.formats import MATH_SHEPHERD_FORMAT, clean_step

TRL = "trl"
MATH_SHEPHERD = "math-shepherd"


def trl_line(record: dict, source: str) -> dict:
    """TRL's stepwise format as the labellers make it: `prompt`, `completions`
    (the steps), `labels` (bool, or the Monte Carlo fraction when soft), plus the
    evidence behind them (`mc`, `measured`, `method`, `id`). `source` is not needed:
    the prompt is the question itself."""
    return record


def math_shepherd_line(record: dict, source: str) -> dict:
    """Math-Shepherd's dataset row: `input` is the question, a space, then the steps,
    each ending in the ` ки` step tag, joined by newlines (the text its PRM reads,
    `openr.prm.formats.MATH_SHEPHERD_FORMAT`); `label` is the same text with each
    tag replaced by `+` (some completion from that step reaches the answer,
    MC > 0) or `-`. Math-Shepherd's labels are hard, so soft ones are cut at MC > 0."""
    fmt = MATH_SHEPHERD_FORMAT
    steps = record["completions"]
    _, text = fmt.render(record["prompt"], steps)
    good, bad = fmt.labels.split()
    mark = fmt.tag.strip()
    marks = [fmt.tag.replace(mark, good if mc > 0 else bad) for mc in record["mc"]]
    label = f"{record['prompt']} " + fmt.joiner.join(clean_step(step, fmt.tag) + tag for step, tag in zip(steps, marks))
    return {"input": text, "label": label, "task": source, "id": record["id"]}


@dataclass(frozen=True)
class OutputFormat:
    """How one TRL record (and the problem's source set) becomes a line, and the
    field that tells a file of this format from another's."""

    line: Callable[[dict, str], dict]
    marker: str


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    TRL: OutputFormat(trl_line, "completions"),
    MATH_SHEPHERD: OutputFormat(math_shepherd_line, "input"),
}


def check_format(name: str, existing: dict | None) -> None:
    """Refuse to append `name`-format lines to a file holding another format's."""
    if existing is not None and OUTPUT_FORMATS[name].marker not in existing:
        others = [other for other, f in OUTPUT_FORMATS.items() if f.marker in existing]
        raise ValueError(f"the output file holds {others[0] if others else 'unknown'}-format records, not {name}: "
                         f"give another --out, or the same --format as before")
