"""Greedy accuracy of a policy checkpoint on a problem set (offline, in-process;
`openr.evaluation` is the other yardstick: search settings swept over the HTTP API).

The yardstick for SFT runs: one greedy sample per problem through the chat
template, graded against the gold answer. It uses `model.generate` directly
(batched, left-padded) rather than a serving engine, so it runs wherever
transformers does and measures the checkpoint alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from openr.tasks.grading import is_correct
from openr.tasks.problem import Problem

# Reply budget in tokens (= characters): the longest arith gold solution is 163,
# and the slack lets a wrong solution with longer numbers still reach its answer.
MAX_NEW_TOKENS = 256


def greedy_completions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str],
                       batch_size: int = 64, progress: bool = True) -> list[str]:
    """One greedy assistant reply per question, in input order."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in questions]
    # Similar prompt lengths share a batch: less padding, and (longer question,
    # longer solution) rows tend to finish together.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    limit = model.config.max_position_embeddings
    replies: dict[int, str] = {}
    for start in tqdm(range(0, len(order), batch_size), desc="greedy", disable=not progress):
        rows = order[start : start + batch_size]
        # Left padding, so every row's next token goes at the same position.
        batch = tokenizer.pad({"input_ids": [prompts[i] for i in rows]}, padding_side="left", return_tensors="pt")
        width = batch["input_ids"].shape[1]
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=False, max_new_tokens=min(MAX_NEW_TOKENS, limit - width),
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        for row, ids in zip(rows, out[:, width:]):
            replies[row] = tokenizer.decode(ids, skip_special_tokens=True)
    return [replies[i] for i in range(len(prompts))]


def model_grades(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[Problem],
                 batch_size: int = 64, progress: bool = True) -> list[bool]:
    """Whether the model's greedy reply to each problem has the gold answer."""
    replies = greedy_completions(model, tokenizer, [p.question for p in problems], batch_size, progress)
    return [is_correct(reply, p.answer) for reply, p in zip(replies, problems)]


def greedy_grades(model_dir: str | Path, problems: list[Problem], batch_size: int = 64,
                  progress: bool = True) -> list[bool]:
    """Whether the checkpoint's greedy reply to each problem has the gold answer."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model_grades(model, tokenizer, problems, batch_size, progress)


def greedy_accuracy(model_dir: str | Path, problems: list[Problem], batch_size: int = 64,
                    progress: bool = True) -> float:
    """Fraction of problems whose greedy reply is graded correct."""
    grades = greedy_grades(model_dir, problems, batch_size, progress)
    return sum(grades) / len(grades)
