"""Train a step-tag PRM (openr.prm.step_tag) on stepwise-labelled solutions.

Input is TRL's stepwise format (`{"prompt", "completions", "labels"}`, labels
hard bool or soft float). Each example becomes the step-tag input; `labels` is
-100 everywhere except at the tag tokens, which carry the step's label, and the
loss is binary cross-entropy on l+ - l- read at those tags, through the same
`tag_margins` the scorer uses: the position trained is the one scored, with no
causal shift in between. Training starts from any causal LM checkpoint (a
policy, so the PRM already reads the task) or from scratch, and writes a plain HF
checkpoint that `StepTagPRM` loads.

`--format math-shepherd` instead writes Math-Shepherd's published format (a plain
causal LM read at its ` ки` tag, openr.training.prm_published), trained with the
same loss at the tags of the input the server builds for that format.

Unlike TRL's PRMTrainer this trains a causal LM's +/- logits rather than a
token-classification head, so the checkpoint stays a causal LM that any LM
runtime loads. The published formats may train as LoRA adapters instead
(`--lora`, openr.training.prm_lora); our own format always trains in full.

Run: `openr train prm --train A.jsonl [B.jsonl] --out DIR [--init-from MODEL] [--format math-shepherd [--lora]]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)

from openr.cli_flags import add_config_flags
from openr.engine.checkpoints import materialize, split_bundle
from openr.hardware import DTYPES, DtypeChoice, choose_dtype, machine_info
from openr.prm import load_prm
from openr.prm.formats import MATH_SHEPHERD, OURS, QWEN_PRM, TRAIN_CONFIG
from openr.prm.public import TokenClassifier, reader_for
from openr.prm.step_tag import StepTagFormat, StepTagPRM, encode_steps, right_pad, tag_margins
from openr.training.prm_lora import ALL_LINEAR, LORA_FORMATS, merged, save_adapter, with_lora
from openr.training.prm_published import add_math_shepherd_tokens, qwen_prm_model, save_qwen_prm, tagged_examples
from openr.training.prm_quality import THRESHOLD, evaluate_prm, load_step_records
from openr.training.sft import IGNORE_INDEX, SFTConfig, build_model
from openr.training.tokenizer import build_tokenizer

LABEL_TYPES = ("hard", "soft")
TRAIN_FORMATS = (OURS, MATH_SHEPHERD, QWEN_PRM)  # what `--format` may write


@dataclass(frozen=True)
class PRMTrainConfig:
    """What to train and for how long."""

    format: str = field(default=OURS, metadata={
        "help": f"{OURS}: our step-tag PRM (prm_* config keys); {MATH_SHEPHERD}: Math-Shepherd's published "
                "format, a plain causal LM read at its ' ки' tag (or, with --lora, an adapter on one); "
                f"{QWEN_PRM}: Qwen2.5-Math-PRM's, a Qwen2ForProcessRewardModel (a Qwen2 base with a 2-label head "
                "read at <extra_0>). Both need --init-from. Serve it with "
                "`openr serve --prm DIR --prm-format FORMAT`."})
    init_from: str | None = field(default=None, metadata={
        "help": "The causal LM to start from, e.g. the policy, so the PRM already knows the task, named as "
                "`openr serve --model` names a policy: a Hugging Face checkpoint directory, a bundle (its "
                "policy/), a built-in alias (smollm2-135m-instruct, openr-arith) or a hub id; unset trains from "
                "scratch at the size given by the four fields below."})
    hidden_size: int = field(default=256, metadata={"help": "From scratch only: model width."})
    num_layers: int = field(default=4, metadata={"help": "From scratch only: transformer blocks."})
    num_heads: int = field(default=4, metadata={"help": "From scratch only: attention heads."})
    intermediate_size: int = field(default=688, metadata={"help": "From scratch only: width of the SwiGLU MLP."})
    max_len: int = field(default=768, metadata={
        "help": "Longest training input in tokens; longer examples are cut, keeping the tags that fit. "
                "From scratch it is also the position table size."})
    label_type: str = field(default="hard", metadata={
        "help": "hard: targets 0/1 (bool labels as they are, float labels thresholded at 0.5); "
                "soft: labels in [0, 1] are the targets."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_fraction: float = field(default=0.05, metadata={"help": "Share of the steps spent on linear warmup."})
    num_epochs: float = field(default=1.0, metadata={"help": "Passes over the training records."})
    max_steps: int = field(default=0, metadata={"help": "Optimizer steps; when > 0 it overrides num_epochs."})
    batch_size: int = field(default=16, metadata={"help": "Solutions per optimizer step."})
    logging_steps: int = field(default=10, metadata={"help": "Steps between printed training losses."})
    dtype: str = field(default="float32", metadata={"help": "float32 (the same PRM on any CPU), bfloat16 (autocast; "
                                                             "fast only with native bf16) or auto (bfloat16 where "
                                                             "native, else float32)."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation and batch order."})
    lora: bool = field(default=False, metadata={
        "help": f"Train peft LoRA adapters on the --init-from model, frozen, instead of every weight ("
                f"{' and '.join(LORA_FORMATS)} only). Tokens the format adds to the tokenizer train their "
                f"embedding rows too. {MATH_SHEPHERD}: OUT is the adapter as OpenR's Math-psa ships "
                "(adapter_config.json naming the local directory --init-from was loaded from, so the server "
                "finds the base on this machine, "
                "adapter weights, tokenizer, and prm_train_config.json saying its format); `openr serve --prm "
                "OUT` reads it as math-shepherd and loads it onto its base. Where tokens were added, the adapter "
                "holds their rows as peft's trainable tokens, which vLLM's LoRA loader refuses; nothing merged "
                "is written beside it: for vLLM or a tool that wants a plain causal LM, merge it (peft's "
                "AutoPeftModelForCausalLM.from_pretrained(OUT).merge_and_unload().save_pretrained(DIR), and "
                "OUT's tokenizer into DIR). "
                f"{QWEN_PRM}: LoRA on the Qwen2 body, the score head trained in full, and OUT saved merged as a "
                "whole Qwen2ForProcessRewardModel, which vLLM's pooling runner reads."})
    lora_r: int = field(default=16, metadata={"help": "With --lora: rank of each adapter."})
    lora_alpha: float = field(default=32.0, metadata={
        "help": "With --lora: adapter scale numerator (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "With --lora: dropout on the adapters' input."})
    lora_target_modules: str | None = field(default=None, metadata={
        "help": "With --lora: comma-separated module names to adapt (e.g. q_proj,k_proj,v_proj,o_proj), or "
                f"'{ALL_LINEAR}' for every linear layer but the output layer; unset: peft's choice for the "
                "architecture (q_proj,v_proj for Llama, Qwen2, Mistral), or every linear layer where peft has "
                "none."})

    def __post_init__(self):
        if self.format not in TRAIN_FORMATS:
            raise ValueError(f"format must be one of {TRAIN_FORMATS}, got {self.format!r}")
        if self.format != OURS and self.init_from is None:
            raise ValueError(f"format {self.format} starts from a causal LM: give init_from")
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {self.label_type!r}")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_len", "batch_size",
                     "logging_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.learning_rate <= 0 or self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError("need learning_rate > 0, weight_decay >= 0 and 0 <= warmup_fraction < 1")
        if self.max_steps < 0 or (self.max_steps == 0 and self.num_epochs <= 0):
            raise ValueError("need max_steps > 0, or max_steps == 0 and num_epochs > 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.lora and self.format not in LORA_FORMATS:
            raise ValueError(f"lora trains adapters on a base causal LM, which only the published formats "
                             f"({', '.join(LORA_FORMATS)}) are served from; format {self.format} is a whole "
                             "checkpoint with prm_* config keys: drop lora, or pick a published format")
        if self.lora_r <= 0 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("need lora_r > 0, lora_alpha > 0 and 0 <= lora_dropout < 1")


def _target(label: bool | float, label_type: str) -> float:
    value = float(label)
    if not 0 <= value <= 1:
        raise ValueError(f"step label {label!r} is not in [0, 1]")
    if label_type == "hard":
        return float(value >= THRESHOLD)
    return value


def encode_record(tokenizer: PreTrainedTokenizerBase, record: dict, tag_id: int, label_type: str,
                  max_len: int) -> dict:
    """Step-tag input ids cut to `max_len`, the tag positions that survive, and their targets."""
    ids, positions = encode_steps(tokenizer, record["prompt"], record["completions"], tag_id)
    return cut_example(ids, positions, record["labels"], label_type, max_len)


def cut_example(ids: list[int], positions: list[int], labels: Sequence, label_type: str, max_len: int) -> dict:
    """Input ids cut to `max_len`, the tag positions that survive, and their targets."""
    kept = [(p, _target(label, label_type)) for p, label in zip(positions, labels, strict=True) if p < max_len]
    return {"input_ids": ids[:max_len], "tag_positions": [p for p, _ in kept], "tag_labels": [y for _, y in kept]}


@dataclass(frozen=True)
class StepTagCollator:
    """Right-pads encoded records; `labels` holds each step's target at its tag
    position and IGNORE_INDEX everywhere else."""

    pad_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = right_pad([e["input_ids"] for e in examples], self.pad_id)
        labels = torch.full(input_ids.shape, float(IGNORE_INDEX))
        for row, example in enumerate(examples):
            labels[row, example["tag_positions"]] = torch.tensor(example["tag_labels"], dtype=torch.float)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class StepTagTrainer(Trainer):
    """`Trainer` with the PRM loss: BCE on l+ - l- at the tag positions only."""

    loss_is_scaled_for_ga = False  # the loss is a per-batch mean

    def __init__(self, *args, label_ids: torch.Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_ids = label_ids

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        tag_mask = labels != IGNORE_INDEX
        margins = tag_margins(model, inputs["input_ids"], inputs["attention_mask"], tag_mask, self.label_ids)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(margins, labels[tag_mask])
        return (loss, {"margins": margins}) if return_outputs else loss


def initial_model(config: PRMTrainConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy checkpoint named by `init_from`, or a fresh arith-tokenizer Llama."""
    if config.init_from is None:
        tokenizer = build_tokenizer(config.max_len)
        size = SFTConfig(hidden_size=config.hidden_size, num_layers=config.num_layers, num_heads=config.num_heads,
                         intermediate_size=config.intermediate_size, max_len=config.max_len, seed=config.seed)
        return build_model(size, tokenizer), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(config.init_from)
    model = (qwen_prm_model(config.init_from, tokenizer) if config.format == QWEN_PRM
             else AutoModelForCausalLM.from_pretrained(config.init_from, dtype=torch.float32))
    if config.format != OURS:
        # A published format is read by its tag or head alone; our prm_* keys, which a
        # start such as the bundled verifier carries, would make readers take it for ours.
        for key in [key for key in vars(model.config) if key.startswith("prm_")]:
            delattr(model.config, key)
    if config.max_len > model.config.max_position_embeddings:
        raise ValueError(f"max_len {config.max_len} exceeds the checkpoint's "
                         f"{model.config.max_position_embeddings} positions")
    return model, tokenizer


def add_step_tag(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, step_format: StepTagFormat) -> int:
    """Add the tag as a special token if missing (growing the embeddings only when
    the vocabulary outgrows them), record the format in the model config, and
    return the tag id."""
    tokenizer.add_tokens([step_format.step_tag], special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    step_format.write_to(model.config)
    return step_format.tag_id(tokenizer)


def _training_arguments(config: PRMTrainConfig, out_dir: str | Path, progress: bool,
                        dtype: DtypeChoice) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_fraction,
        num_train_epochs=config.num_epochs, max_steps=config.max_steps or -1,
        logging_steps=config.logging_steps, logging_first_step=True, bf16=dtype.autocast, seed=config.seed,
        # The checkpoint is written once, by save_prm; the collator needs every field it is given.
        save_strategy="no", report_to="none", remove_unused_columns=False, prediction_loss_only=True,
        # Named: Trainer reads them off forward()'s signature, and the qwen-prm classifier's has none.
        label_names=["labels"],
        disable_tqdm=not progress, dataloader_pin_memory=False,
        # Trainer refuses bf16 without a GPU unless told it runs on the CPU.
        use_cpu=not torch.cuda.is_available())


def save_prm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: PRMTrainConfig,
             out_dir: str | Path) -> None:
    """Write the checkpoint (config and float32 safetensors; with --lora on math-shepherd the adapter
    instead), the tokenizer and the PRMTrainConfig."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, TokenClassifier):
        save_qwen_prm(merged(model), out)
    elif isinstance(model, PeftModel):
        save_adapter(model, out)
    else:
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / TRAIN_CONFIG).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def _encode_all(tokenizer: PreTrainedTokenizerBase, paths: Sequence[str | Path], tag_id: int,
                config: PRMTrainConfig) -> list[dict]:
    encoded = [encode_record(tokenizer, r, tag_id, config.label_type, config.max_len)
               for r in load_step_records(paths)]
    return [e for e in encoded if e["tag_positions"]]  # a question longer than max_len leaves nothing to train


def prepare_format(config: PRMTrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
    """Give model and tokenizer the tokens of `config.format`; return a function
    encoding jsonl files into training examples, and the (good, bad) label ids."""
    if config.format == OURS:
        step_format = StepTagFormat()
        tag_id = add_step_tag(model, tokenizer, step_format)
        return (lambda paths: _encode_all(tokenizer, paths, tag_id, config)), step_format.label_ids(tokenizer)
    reader = (reader_for(tokenizer, QWEN_PRM, config.init_from) if config.format == QWEN_PRM
              else add_math_shepherd_tokens(model, tokenizer))

    def encode(paths: Sequence[str | Path]) -> list[dict]:
        encoded = [cut_example(*example, config.label_type, config.max_len)
                   for example in tagged_examples(reader, paths)]
        return [e for e in encoded if e["tag_positions"]]

    return encode, torch.tensor(reader.pair)


def train_prm(config: PRMTrainConfig, train_jsonl_paths: Sequence[str | Path], out_dir: str | Path,
              eval_jsonl: str | Path | None = None, progress: bool = True) -> dict:
    """Train a step-tag PRM, save it to `out_dir`, and return a summary: examples,
    steps, minutes, the logged training losses, and with `eval_jsonl` the eval
    loss plus `prm_metrics` of the saved checkpoint (keys prefixed "eval_")."""
    set_seed(config.seed)
    if config.init_from is not None:  # an alias or bundle read as `openr serve --model` reads it
        config = dataclasses.replace(config, init_from=str(materialize(split_bundle(config.init_from)[0])))
    dtype = choose_dtype(config.dtype, "cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = initial_model(config)
    encode, label_ids = prepare_format(config, model, tokenizer)
    if config.lora:
        model = with_lora(model, tokenizer, config)
    train = encode(train_jsonl_paths)
    evaluation = encode([eval_jsonl]) if eval_jsonl else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = StepTagTrainer(model=model, args=_training_arguments(config, out_dir, progress, dtype),
                             train_dataset=train,
                             eval_dataset=evaluation, data_collator=StepTagCollator(pad_id),
                             label_ids=label_ids)
    start = time.monotonic()
    trainer.train()
    minutes = (time.monotonic() - start) / 60
    save_prm(model.eval(), tokenizer, config, out_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {"out_dir": str(out_dir), "num_examples": len(train), "steps": trainer.state.global_step,
               "minutes": minutes, "losses": losses, **dtype.summary(), "machine": machine_info()}
    if evaluation:
        summary["eval_loss"] = trainer.evaluate()["eval_loss"]
        scorer = StepTagPRM(out_dir) if config.format == OURS else load_prm(out_dir, prm_format=config.format)
        metrics = evaluate_prm(scorer, load_step_records([eval_jsonl]))
        summary.update({f"eval_{name}": value for name, value in metrics.items()})
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command line: every PRMTrainConfig field is a `--kebab-case` flag with its help text."""
    parser = argparse.ArgumentParser(prog="openr train prm", description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", required=True,
                        help="Labelled jsonl files to train on: TRL stepwise (prompt, completions, labels), or with "
                             "--format math-shepherd also Math-Shepherd's input/label lines.")
    parser.add_argument("--eval", help="Held-out TRL stepwise jsonl file.")
    parser.add_argument("--out", required=True, help="Checkpoint directory to write.")
    add_config_flags(parser, PRMTrainConfig, choices={"format": TRAIN_FORMATS, "label_type": LABEL_TYPES,
                                                         "dtype": DTYPES})
    args = vars(parser.parse_args(argv))
    train, evaluation, out = args.pop("train"), args.pop("eval"), args.pop("out")
    print(json.dumps(train_prm(PRMTrainConfig(**args), train, out, evaluation), indent=2))


if __name__ == "__main__":
    main()
