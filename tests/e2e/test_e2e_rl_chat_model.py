"""End to end for `openr train rl` on a real chat model: SmolLM2-135M-Instruct,
named by the alias `openr serve` takes, on GSM8K problems from a jsonl file,
one step a line. Its rollouts are prompted through SmolLM2's chat template; the
run writes its history and summary, a rerun resumes it with nothing left to do,
and `openr serve` serves the checkpoint it wrote, chat template included."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from transformers import AutoTokenizer

from openr.engine.checkpoints import SMOLLM2_ALIAS, materialize
from openr.engine.hf_engine import HFEngine
from openr.rl import commands
from openr.rl.checkpoint import HISTORY_FILE, SUMMARY_FILE
from tests.support.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.e2e
GSM8K = Path(__file__).parents[3] / "shared" / "data" / "gsm8k_train.jsonl"
TRAIN_ROWS, QUESTIONS, GROUP = 3, 2, 2
# One tiny round: what is checked is the path through a real chat model, not learning.
TINY = ["--iterations", "1", "--questions-per-iteration", str(QUESTIONS), "--group-size", str(GROUP),
        "--max-steps", "4", "--max-step-tokens", "24", "--max-episode-tokens", "24", "--eval-problems", "1",
        "--eval-max-tokens", "16", "--minibatch-size", "4", "--kl-coef", "0", "--no-gradient-signal",
        "--step-separator", "\\n", "--no-progress"]


def chat_prompt(question: str) -> str:
    """SmolLM2's own turn markers around a user question, written out rather than rendered."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def test_rl_on_smollm2_with_gsm8k_uses_its_chat_template_resumes_and_serves(tmp_path, monkeypatch, capsys,
                                                                            one_thread):
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[: TRAIN_ROWS + 1]]
    train, held_out = tmp_path / "train.jsonl", tmp_path / "held_out.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows[:TRAIN_ROWS]))
    held_out.write_text(json.dumps(rows[TRAIN_ROWS]) + "\n")
    prompts = []
    sample = HFEngine.generate_steps

    async def recording(self, prefixes, *args, **kwargs):
        prompts.extend(prefixes)
        return await sample(self, prefixes, *args, **kwargs)

    monkeypatch.setattr(HFEngine, "generate_steps", recording)
    out = tmp_path / "rl"
    flags = ["--policy", SMOLLM2_ALIAS, "--out", str(out), "--dataset", str(train), "--eval-dataset",
             str(held_out), *TINY]

    commands.main(flags)
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == QUESTIONS * GROUP and summary["steps"] == 1
    assert [e["iteration"] for e in summary["evals"]] == [0, 1]
    assert json.loads((out / SUMMARY_FILE).read_text())["samples"] == summary["samples"]
    [round_one] = [json.loads(line) for line in (out / HISTORY_FILE).read_text().splitlines()]
    assert round_one["samples"] == QUESTIONS * GROUP and 0 <= round_one["train_accuracy"] <= 1

    # every rollout began at the chat template's assistant turn, after one of the training questions
    questions = [row["question"] for row in rows[:TRAIN_ROWS]]
    assert len(prompts) == QUESTIONS * GROUP  # one whole-solution sample each
    assert all(any(p.endswith(chat_prompt(q)) for q in questions) for p in prompts)

    history = (out / HISTORY_FILE).read_text()
    commands.main(flags)  # the same command again: the saved run is resumed, with no round left
    assert json.loads(capsys.readouterr().out)["samples"] == summary["samples"]
    assert (out / HISTORY_FILE).read_text() == history and len(prompts) == QUESTIONS * GROUP

    with ServerProcess(["--engine", "hf", "--model", str(out), "--max-model-len", "2048"]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)
        messages = [{"role": "user", "content": rows[TRAIN_ROWS]["question"]}]
        reply = client.chat.completions.create(model=out.name, messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content.strip()
    # the server rendered the prompt through SmolLM2's template (its system turn included): the checkpoint kept it
    tokenizer = AutoTokenizer.from_pretrained(materialize(SMOLLM2_ALIAS))
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith(chat_prompt(messages[0]["content"]))
    assert reply.usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))
