"""Which PRM format a checkpoint is, and what each public format reads.

`--prm-format auto` looks at what a checkpoint says about itself: an
`adapter_config.json` (OpenR's Math-psa is a LoRA adapter), `architectures`
(`Qwen2ForProcessRewardModel`), our own `prm_*` config keys. An adapter that
`openr train prm --format math-shepherd --lora` wrote says so in the
`prm_train_config.json` beside it (its `format` field); any other adapter reads
as Math-psa. Math-Shepherd is a plain causal LM whose config says nothing (as is
Math-psa merged into its base), so it has to be named. Every
failure here is a `PRMFormatError`, raised when the server starts, with the
formats listed: never a traceback at the first request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase
from transformers.utils import cached_file

OURS = "ours"
MATH_SHEPHERD = "math-shepherd"
OPENR = "openr"
QWEN_PRM = "qwen-prm"
FORMATS = (OURS, MATH_SHEPHERD, OPENR, QWEN_PRM)
AUTO = "auto"
FORMAT_CHOICES = (AUTO, *FORMATS)
FORMAT_HELP = (f"{OURS} (this project's step-tag or likelihood checkpoints, with prm_* config keys), "
               f"{MATH_SHEPHERD} (peiyi9979/math-shepherd-mistral-7b-prm), {OPENR} (OpenR's Math-psa LoRA "
               f"adapter), {QWEN_PRM} (Qwen/Qwen2.5-Math-PRM-7B, Qwen2ForProcessRewardModel)")
QWEN_PRM_ARCHITECTURE = "Qwen2ForProcessRewardModel"
OUR_CONFIG_KEYS = ("prm_kind", "prm_step_tag")
ADAPTER_CONFIG = "adapter_config.json"
# What `openr train prm` writes beside every checkpoint: its PRMTrainConfig, whose
# `format` field tells a math-shepherd adapter from Math-psa's.
TRAIN_CONFIG = "prm_train_config.json"


class PRMFormatError(ValueError):
    """A PRM checkpoint that cannot be served as asked: unreadable, of an
    undetectable or mismatched format, or missing its tag or label tokens."""


@dataclass(frozen=True)
class TagFormat:
    """A step-tag PRM published as a plain causal LM (Math-Shepherd, OpenR).

    Input: `f"{question} {solution}"`, each step of the solution ending with
    `tag` and the steps joined by `joiner`. Score of a step: the softmax over
    the logits of the two label tokens at the step's tag position, P(good).
    The label tokens are the two tokens of `labels` (good, bad), as the
    models' reward code encodes them (`tokenizer.encode("+ -")` and
    `tokenizer.encode(" + -")`); the tag token is the last token of `tag`.
    """

    name: str
    tag: str
    labels: str
    joiner: str

    def render(self, question: str, steps: list[str]) -> tuple[str, str]:
        """(text before the solution, the whole input text)."""
        head = f"{question} "
        return head, head + self.joiner.join(clean_step(step, self.tag) + self.tag for step in steps)


# Math-Shepherd's model card: `f"{question} {output}"`, steps "... ки\n...", labels from "+ -".
MATH_SHEPHERD_FORMAT = TagFormat(MATH_SHEPHERD, tag=" ки", labels="+ -", joiner="\n")
# OpenR's reward code (Math-psa): step tag " \n\n\n\n\n", labels from " + -".
OPENR_FORMAT = TagFormat(OPENR, tag=" \n\n\n\n\n", labels=" + -", joiner="")
TAG_FORMATS = {MATH_SHEPHERD: MATH_SHEPHERD_FORMAT, OPENR: OPENR_FORMAT}

# Qwen2.5-Math-PRM's model card: the steps joined and ended by <extra_0>, as the
# assistant turn of its chat template, after this system prompt.
QWEN_PRM_STEP_TAG = "<extra_0>"
QWEN_PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def qwen_prm_messages(question: str, steps: list[str]) -> list[dict]:
    solution = "".join(clean_step(step, QWEN_PRM_STEP_TAG) + QWEN_PRM_STEP_TAG for step in steps)
    return [{"role": "system", "content": QWEN_PRM_SYSTEM_PROMPT}, {"role": "user", "content": question},
            {"role": "assistant", "content": solution}]


def clean_step(step: str, tag: str) -> str:
    """The step as the PRM reads it: stripped, and never spelling the tag itself
    (policy text holding a tag would otherwise add a step)."""
    mark = tag.strip(" ")
    return step.strip().replace(mark, " ") if mark else step.strip()


def read_json(checkpoint: str | Path, name: str) -> dict | None:
    """A JSON file of a local checkpoint or a hub repo; None when it has none."""
    try:
        path = cached_file(str(checkpoint), name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError) as exc:
        raise PRMFormatError(f"cannot read PRM checkpoint {checkpoint}: {exc}") from exc
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PRMFormatError(f"cannot read {name} of PRM checkpoint {checkpoint}: {exc}") from exc


def detect_format(checkpoint: str | Path, requested: str = AUTO) -> str:
    """The format of a PRM checkpoint: the one requested, checked against what
    the checkpoint says, or (auto) the one it says it is."""
    if requested not in FORMAT_CHOICES:
        raise PRMFormatError(f"unknown PRM format {requested!r}; the formats are: {FORMAT_HELP}")
    if str(checkpoint).startswith((".", "/", "~")) and not Path(checkpoint).expanduser().is_dir():
        raise PRMFormatError(f"{checkpoint}: no such PRM checkpoint directory")
    adapter = read_json(checkpoint, ADAPTER_CONFIG)
    config = read_json(checkpoint, "config.json")
    if adapter is None and config is None:
        raise PRMFormatError(f"{checkpoint} is not a PRM checkpoint: it has neither config.json nor "
                             f"{ADAPTER_CONFIG}")
    config = config or {}
    said = (adapter_format(checkpoint) if adapter is not None
            else QWEN_PRM if QWEN_PRM_ARCHITECTURE in config.get("architectures", [])
            else OURS if any(key in config for key in OUR_CONFIG_KEYS) else None)
    if requested == AUTO:
        if said is None:
            raise PRMFormatError(f"cannot tell the format of PRM {checkpoint} (no adapter config, no "
                                 f"{QWEN_PRM_ARCHITECTURE} architecture, no prm_* config keys); pass "
                                 f"--prm-format, one of: {FORMAT_HELP}")
        return said
    # A tag format ships as a plain causal LM or as a LoRA adapter on one (Math-psa is one):
    # either may be named as any tag format, but for an adapter trained here, which says its own.
    if said != requested and not (requested in TAG_FORMATS and said in (None, OPENR)):
        what = said or f"a plain causal LM ({', '.join(config.get('architectures', [])) or 'no architectures'})"
        raise PRMFormatError(f"PRM {checkpoint} is not in the {requested} format: it reads as {what}. "
                             f"The formats are: {FORMAT_HELP}")
    return requested


def adapter_format(checkpoint: str | Path) -> str:
    """The tag format of a LoRA adapter: the one its `prm_train_config.json` names
    (an adapter `openr train prm --lora` wrote), else openr (Math-psa's)."""
    trained = read_json(checkpoint, TRAIN_CONFIG) or {}
    return trained.get("format") if trained.get("format") in TAG_FORMATS else OPENR


def one_token(tokenizer: PreTrainedTokenizerBase, text: str, what: str, checkpoint) -> int:
    """The id of `text`, which this tokenizer must hold as one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise PRMFormatError(f"the tokenizer of PRM {checkpoint} has no {what} token {text!r} (it encodes to "
                             f"{len(ids)} tokens); is this the right --prm-format?")
    return ids[0]


def label_pair(tokenizer: PreTrainedTokenizerBase, labels: str, checkpoint) -> tuple[int, int]:
    """The (good, bad) token ids: the two tokens of `labels`."""
    ids = tokenizer.encode(labels, add_special_tokens=False)
    if len(ids) != 2 or ids[0] == ids[1] or tokenizer.unk_token_id in ids:
        raise PRMFormatError(f"the tokenizer of PRM {checkpoint} does not encode the labels {labels!r} as two "
                             f"tokens (good, bad); is this the right --prm-format?")
    return ids[0], ids[1]
