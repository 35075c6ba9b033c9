"""Greedy accuracy of a policy checkpoint on a problem set (offline, in-process;
`openr.evaluation` is the other yardstick: search settings swept over the HTTP API).

The yardstick for SFT and RL runs: one greedy reply per problem through the
chat template, graded against the gold answer. Replies come from the serving
engine (`HFEngine`, over the model in memory), the one sampling path the
server, search, labelling and RL rollouts share, so an accuracy here is what
`openr serve` would answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from openr.engine.base import Engine, SamplingConfig
from openr.tasks.grading import is_correct
from openr.tasks.problem import Problem

# Reply budget in tokens (= characters): the longest arith gold solution is 163,
# and the slack lets a wrong solution with longer numbers still reach its answer.
MAX_NEW_TOKENS = 256


async def engine_replies(engine: Engine, questions: Sequence[str], temperature: float = 0.0,
                         samples: int = 1, seed: int | None = None, progress: bool = True,
                         desc: str = "greedy", max_tokens: int = MAX_NEW_TOKENS) -> list[list[str]]:
    """`samples` replies of up to `max_tokens` tokens of the engine's model to each
    question (all in flight at once, so the engine batches them), in input order;
    a seeded call gives sample j of question i the seed `seed + i * samples + j`."""
    prompts = [await engine.prepare_chat([{"role": "user", "content": q}]) for q in questions]
    bar = tqdm(total=len(prompts) * samples, desc=desc, disable=not progress)

    async def reply(i: int, j: int) -> str:
        prompt = prompts[i]
        config = SamplingConfig(min(max_tokens, engine.max_model_len - prompt.num_tokens), temperature,
                                seed=None if seed is None else seed + i * samples + j)
        text = (await engine.complete(prompt.text, config)).text
        bar.update(1)
        return text

    try:
        texts = await asyncio.gather(*(reply(i, j) for i in range(len(prompts)) for j in range(samples)))
    finally:
        bar.close()
    return [list(texts[i * samples : (i + 1) * samples]) for i in range(len(prompts))]


async def engine_grades(engine: Engine, problems: Sequence[Problem], progress: bool = True,
                        max_tokens: int = MAX_NEW_TOKENS) -> list[bool]:
    """Whether the engine's greedy reply to each problem states the gold answer as
    its final answer (no last-number fallback, as `openr eval` grades by default)."""
    replies = await engine_replies(engine, [p.question for p in problems], progress=progress, max_tokens=max_tokens)
    return [is_correct(reply, p.answer, lenient=False) for [reply], p in zip(replies, problems)]


def model_grades(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[Problem],
                 decode_batch_size: int = 64, progress: bool = True) -> list[bool]:
    """`engine_grades` for a model in memory, decoding `decode_batch_size` replies at a time
    (from synchronous code; async code awaits `engine_grades` on its own engine)."""
    from openr.engine.hf_engine import HFEngine

    async def grade() -> list[bool]:
        engine = HFEngine.for_model(model, tokenizer, decode_batch_size=decode_batch_size)
        await engine.start()
        try:
            return await engine_grades(engine, problems, progress)
        finally:
            await engine.close()

    return asyncio.run(grade())


def greedy_grades(model_dir: str | Path, problems: list[Problem], decode_batch_size: int = 64,
                  progress: bool = True) -> list[bool]:
    """Whether the checkpoint's greedy reply to each problem has the gold answer."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model_grades(model, tokenizer, problems, decode_batch_size, progress)


def greedy_accuracy(model_dir: str | Path, problems: list[Problem], decode_batch_size: int = 64,
                    progress: bool = True) -> float:
    """Fraction of problems whose greedy reply is graded correct."""
    grades = greedy_grades(model_dir, problems, decode_batch_size, progress)
    return sum(grades) / len(grades)
