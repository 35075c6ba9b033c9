"""Supervised fine-tuning of a small policy LM, from scratch, on arith gold solutions.

Search and PRMs need a policy that is right often but not always, trainable on a
CPU in minutes with nothing downloaded. This module trains a small Llama (under
a million parameters by default) on chat-formatted gold solutions, with loss on
the assistant turn only, and writes a plain HF checkpoint that transformers and
vLLM both load.

The loop is plain PyTorch (warmup + cosine over `max_steps`, gradient
clipping) rather than `transformers.Trainer`: batches are grouped by length to
waste less compute on padding, and the hidden matrices train with Muon
(`openr.training.muon`; embeddings and norm gains with AdamW), which on this task
reaches a given accuracy in about a third of AdamW's steps. Both are a few lines
here and awkward as Trainer callbacks. What is trained is fixed by the config
alone: the dtype defaults to float32 on every machine, and a wall-clock cap is
opt-in and loud when it binds.

Run: `openr train sft --out DIR [--max-steps 1100 --dtype auto ...]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from openr.cli_flags import add_config_flags
from openr.hardware import DTYPES, DtypeChoice, TimeCap, choose_dtype, machine_info
from openr.tasks.arith import check_levels, train_problems
from openr.tasks.problem import Problem
from openr.training.muon import Muon
from openr.training.tokenizer import build_tokenizer

IGNORE_INDEX = -100  # label value that cross-entropy skips (prompt and padding positions)
# vLLM's CPU attention kernels only exist for these head sizes; a checkpoint
# with any other hidden_size / num_heads ratio would not serve there.
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# Batches are cut from pools this many batches large, sorted by length, so a
# batch holds sequences of similar length and little padding.
LENGTH_GROUP_BATCHES = 64
LOSS_EMA_DECAY = 0.95  # smoothing of the loss shown on the progress bar
CONFIG_FILENAME = "sft_config.json"  # the SFTConfig that produced a checkpoint


@dataclass(frozen=True)
class SFTConfig:
    """What to train and for how long. The defaults are the committed arith policy."""

    hidden_size: int = field(default=128, metadata={"help": "Model width (embedding size)."})
    num_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads; hidden_size / num_heads must be a "
                                                         "head size vLLM's CPU backend supports (32, 64, ...)."})
    intermediate_size: int = field(default=344, metadata={"help": "Width of the SwiGLU MLP."})
    max_len: int = field(default=768, metadata={"help": "Position table size in tokens (= characters); "
                                                         "longer training problems are left out."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate (Muon and AdamW)."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Final learning rate as a fraction of the peak."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warmup steps."})
    weight_decay: float = field(default=0.1, metadata={"help": "Decoupled weight decay on the Muon-trained "
                                                                 "matrices (not the embedding or norms)."})
    grad_clip: float = field(default=1.0, metadata={"help": "Max global gradient norm."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per optimizer step."})
    max_steps: int = field(default=1100, metadata={"help": "Optimizer steps: what is trained, and the length "
                                                            "of the learning-rate schedule."})
    max_minutes: float = field(default=0.0, metadata={"help": "Opt-in wall-clock cap in minutes (0: none). If it "
                                                               "binds, training stops early with a warning and the "
                                                               "summary records the steps done; the learning-rate "
                                                               "schedule still follows max_steps."})
    num_train_problems: int = field(default=100_000, metadata={"help": "Distinct generated training problems."})
    min_ops: int = field(default=2, metadata={"help": "Fewest operations per training problem."})
    max_ops: int = field(default=8, metadata={"help": "Most operations per training problem."})
    seed: int = field(default=0, metadata={"help": "Seed for problems, initialisation and batch order."})
    init_from: str | None = field(default=None, metadata={"help": "Continue from this policy checkpoint (an "
                                                                   "`openr train sft` output) instead of a fresh "
                                                                   "model; its architecture wins over the size "
                                                                   "flags, and the optimizer and schedule start "
                                                                   "fresh. Use a new --seed to draw new problems."})
    dtype: str = field(default="float32", metadata={"help": "float32: the same model on any CPU (default); "
                                                             "bfloat16: autocast, weights stay float32, fast only "
                                                             "where the CPU has native bf16 (AVX512-BF16, AMX) and "
                                                             "12x slower where it is emulated (AVX2); auto: "
                                                             "bfloat16 where native, else float32."})

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.hidden_size // self.num_heads not in VLLM_CPU_HEAD_DIMS:
            raise ValueError(f"head size {self.hidden_size // self.num_heads} is not one of {VLLM_CPU_HEAD_DIMS}")
        positive = ("num_layers", "intermediate_size", "max_len", "batch_size", "max_steps", "num_train_problems")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 < self.learning_rate or not 0 <= self.min_lr_ratio <= 1 or self.max_minutes < 0:
            raise ValueError("need learning_rate > 0, 0 <= min_lr_ratio <= 1 and max_minutes >= 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        check_levels(self.min_ops, self.max_ops)


def encode_examples(tokenizer: PreTrainedTokenizerBase,
                    problems: list[Problem]) -> list[tuple[list[int], list[int]]]:
    """Token ids of each chat-formatted problem and its gold solution, with labels
    that train only the assistant turn, ending in the EOS token `<|im_end|>`.
    Prompts are rendered first and all texts go to the Rust tokenizer's batch
    encoder: per-problem `apply_chat_template(tokenize=True)` took 26 s of a
    100k-problem run's setup, this takes 5 s."""
    conversations = [[{"role": "user", "content": p.question}] for p in problems]
    prompts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    encode = tokenizer.backend_tokenizer.encode_batch
    prompt_ids = [e.ids for e in encode(prompts, add_special_tokens=False)]
    answer_ids = [e.ids for e in encode([p.solution for p in problems], add_special_tokens=False)]
    eos = [tokenizer.eos_token_id]
    return [(prompt + answer + eos, [IGNORE_INDEX] * len(prompt) + answer + eos)
            for prompt, answer in zip(prompt_ids, answer_ids)]


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of example indices: each epoch is shuffled, cut into pools,
    each pool sorted by length and split into batches, and the batches shuffled."""
    pool_size = batch_size * LENGTH_GROUP_BATCHES
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size], key=lengths.__getitem__)
            batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
            rng.shuffle(batches)
            yield from batches


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and of the loss."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), IGNORE_INDEX)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def build_model(config: SFTConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A randomly initialised standard Llama sized by `config`."""
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_len,
        # Tied input/output embeddings: with a 102-token vocabulary this saves
        # little, but it is what small Llamas (SmolLM) do and vLLM supports it.
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(llama)


def lr_factor(config: SFTConfig, step: int) -> float:
    """Learning-rate multiplier: linear warmup, then cosine decay to
    `min_lr_ratio` at `max_steps`. Steps only: no clock moves it."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(step / config.max_steps, 1.0)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def make_optimizers(model: LlamaForCausalLM, config: SFTConfig,
                    dtype: DtypeChoice = DtypeChoice("float32", "")) -> list[torch.optim.Optimizer]:
    """Muon for the attention and MLP matrices; AdamW, without weight decay, for
    the (tied) embedding and the norm gains, which Muon's orthogonalised
    updates do not suit. Muon's "match_rms_adamw" scaling lets both share one
    learning rate; its Newton-Schulz iteration runs in the run's dtype."""
    embedding = model.get_input_embeddings().weight
    hidden = [p for p in model.parameters() if p.dim() == 2 and p is not embedding]
    rest = [p for p in model.parameters() if p.dim() != 2 or p is embedding]
    return [
        Muon(hidden, ns_dtype=torch.bfloat16 if dtype.autocast else torch.float32, lr=config.learning_rate,
             weight_decay=config.weight_decay, adjust_lr_fn="match_rms_adamw"),
        torch.optim.AdamW(rest, lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.0),
    ]


def training_examples(config: SFTConfig, tokenizer: PreTrainedTokenizerBase,
                      problems: list[Problem] | None = None) -> tuple[list, int]:
    """The encoded training problems (`problems`, else the config's arith draw)
    that fit in `max_len`, and how many did not. Long problems are dropped
    rather than truncated: a cut-off solution would teach the model to stop
    mid-step (and one cut inside the prompt has no loss)."""
    if problems is None:
        problems = train_problems(config.num_train_problems, seed=config.seed,
                                  min_ops=config.min_ops, max_ops=config.max_ops)
    encoded = encode_examples(tokenizer, problems)
    examples = [(ids, labels) for ids, labels in encoded if len(ids) <= config.max_len]
    if not examples:
        raise ValueError(f"no training problem fits in max_len={config.max_len} tokens")
    return examples, len(encoded) - len(examples)


def initial_model(config: SFTConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A fresh model sized by `config`, or the checkpoint `init_from` (which must
    use the arith tokenizer: its vocabulary is checked against `tokenizer`)."""
    if config.init_from is None:
        return build_model(config, tokenizer)
    model = LlamaForCausalLM.from_pretrained(config.init_from, dtype=torch.float32)
    if model.config.vocab_size != len(tokenizer):
        raise ValueError(f"{config.init_from}: vocabulary of {model.config.vocab_size} tokens, not the arith "
                         f"tokenizer's {len(tokenizer)}")
    return model


def train_policy(config: SFTConfig, out_dir: str | Path, progress: bool = True,
                 problems: list[Problem] | None = None) -> dict:
    """Train a policy (from scratch, or on from `init_from`) and save it as a HF checkpoint in `out_dir`,
    on `problems`' solutions when given (e.g. a policy's own verified-correct
    ones), else on the config's draw of arith gold solutions.
    Returns a summary: out_dir, parameters, steps done and planned, whether a
    time cap stopped it, minutes, final (smoothed) loss, how many problems were
    used or skipped as longer than max_len, the dtype and the machine."""
    torch.manual_seed(config.seed)
    dtype = choose_dtype(config.dtype)
    tokenizer = build_tokenizer(config.max_len)
    examples, skipped = training_examples(config, tokenizer, problems)
    batches = length_grouped_batches([len(ids) for ids, _ in examples], config.batch_size,
                                     random.Random(config.seed))

    model = initial_model(config, tokenizer).train()
    optimizers = make_optimizers(model, config, dtype)
    param_groups = [group for optimizer in optimizers for group in optimizer.param_groups]
    cap = TimeCap(config.max_minutes, "policy SFT")
    step, smoothed = 0, None
    bar = tqdm(total=config.max_steps, desc=f"sft ({dtype.name})", disable=not progress)
    while step < config.max_steps and not cap.reached(step, config.max_steps):
        lr = config.learning_rate * lr_factor(config, step)
        for group in param_groups:
            group["lr"] = lr
        batch = collate([examples[i] for i in next(batches)], tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype.autocast):
            loss = model(**batch).loss
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        for optimizer in optimizers:
            optimizer.step()
        step += 1
        smoothed = loss.item() if smoothed is None else LOSS_EMA_DECAY * smoothed + (1 - LOSS_EMA_DECAY) * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{lr:.2e}")
    bar.close()
    save_checkpoint(model.eval(), tokenizer, config, out_dir)
    return {"out_dir": str(out_dir), "params": sum(p.numel() for p in model.parameters()),
            **cap.summary(step, config.max_steps), "final_loss": smoothed,
            "train_examples": len(examples), "skipped_too_long": skipped, "init_from": config.init_from,
            **dtype.summary(),
            "machine": machine_info()}


def save_checkpoint(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, config: SFTConfig,
                    out_dir: str | Path) -> None:
    """Write config, float32 safetensors, tokenizer + chat template, a generation
    config that stops at `<|im_end|>`, and the SFTConfig that produced them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / CONFIG_FILENAME).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line: every SFTConfig field is a `--kebab-case` flag with its help text."""
    parser = argparse.ArgumentParser(prog="openr train sft", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Checkpoint directory to write.")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="Show a progress bar with the loss.")
    add_config_flags(parser, SFTConfig, choices={"dtype": DTYPES})
    args = vars(parser.parse_args(argv))
    out, progress = args.pop("out"), args.pop("progress")
    print(json.dumps(train_policy(SFTConfig(**args), out, progress=progress), indent=2))


if __name__ == "__main__":
    main()
