"""End to end for labelling and a PRM on a real chat model, SmolLM2-135M-Instruct,
named by the alias `openr serve` takes: `openr train label --step-separator '\\n'`
cuts its one-line steps where it writes them, `openr train prm --init-from
smollm2-135m-instruct --format math-shepherd --lora` trains an adapter on it from
those labels, and `--prm-format auto` reads that adapter as math-shepherd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openr.engine.checkpoints import SMOLLM2_ALIAS, materialize
from openr.engine.hf_engine import HFEngine
from openr.prm import check_prm, load_prm
from openr.tasks.problem import split_steps
from openr.training import prm_train
from openr.training.labels import pipeline

pytestmark = pytest.mark.e2e
GSM8K = Path(__file__).parents[3] / "shared" / "data" / "gsm8k_train.jsonl"
ROW = 7  # a question on which SmolLM2, at these seeds, writes its solution a step a line
LINE = "\n"


def test_smollm2_labels_split_at_its_separator_and_train_a_math_shepherd_adapter_auto_reads(
        tmp_path, monkeypatch, capsys, one_thread):
    data, labels, prm = tmp_path / "gsm8k.jsonl", tmp_path / "labels.jsonl", tmp_path / "prm"
    data.write_text(GSM8K.read_text().splitlines()[ROW] + "\n")
    calls = []
    sample = HFEngine.generate_steps

    async def recording(self, prefixes, *args, **kwargs):
        outputs = await sample(self, prefixes, *args, **kwargs)
        calls.extend(zip(prefixes, outputs))
        return outputs

    monkeypatch.setattr(HFEngine, "generate_steps", recording)
    pipeline.main(["--method", "math_shepherd", "--dataset", str(data), "--model", SMOLLM2_ALIAS, "--out",
                   str(labels), "--step-separator", "\\n", "--k", "1", "--samples-per-problem", "1",
                   "--max-tokens", "64"])
    assert json.loads(capsys.readouterr().out)["problems"] == 1

    [record] = [json.loads(line) for line in labels.read_text().splitlines()]
    steps = record["completions"]
    (prompt, [solution]), *continued = calls  # the solution from the bare prompt, then the prefixes' rollouts
    # the model wrote lines with no blank line between: at the default separator they would be one step
    assert any(LINE in step for step in split_steps(solution.text))
    assert steps == split_steps(solution.text, LINE) and len(steps) > 1
    # every proper prefix was continued from just after its last step and one separator
    assert {prefix.removeprefix(prompt) for prefix, _ in continued} == \
        {LINE.join(steps[:i]) + LINE for i in range(1, len(steps))}

    prm_train.main(["--train", str(labels), "--out", str(prm), "--init-from", SMOLLM2_ALIAS, "--format",
                    "math-shepherd", "--lora", "--max-steps", "1", "--batch-size", "1", "--max-len", "512"])
    adapter = json.loads((prm / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(materialize(SMOLLM2_ALIAS))  # a base the server can load
    assert check_prm(prm) == "math-shepherd"  # auto: the adapter says its format
    [scores] = load_prm(prm).score_batch([(record["prompt"], record["completions"])])
    assert len(scores) == len(record["completions"]) and all(0 < s < 1 for s in scores)
