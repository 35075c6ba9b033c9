"""End to end for the training pipeline: the tiny recipe trains a policy and a
PRM, and `openr serve` serves that bundle on both engines with its PRM attached
(every search strategy on the committed bundle: test_e2e_openr_arith.py)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from openr.prm import load_prm
from openr.tasks.arith import test_split
from openr.training.policy_accuracy import greedy_accuracy
from openr.training.recipe import PRESETS, run_recipe
from tests.support.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.e2e
QUESTION = "Compute 12 + 7 - 3."


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle


def test_recipe_writes_every_stage_and_resumes(bundle):
    out, summary = bundle
    for name in ("policy/config.json", "verifier/config.json", "prm/config.json", "prm-step-tag/config.json",
                 "labels/math_shepherd.jsonl", "summary.json"):
        assert (out / name).exists(), name
    record = json.loads((out / "labels" / "math_shepherd.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completions", "labels"} <= set(record)
    assert len(record["completions"]) == len(record["labels"])
    assert set(summary["minutes"]) == {"sft", "sft_eval", "verifier_sft", "verifier_sft_eval", "labels", "prm",
                                       "step_tag_prm", "prm_eval"}
    again = run_recipe(PRESETS["tiny"], out, progress=False)  # everything is done: nothing is redone
    assert again == summary


def test_recipe_summary_records_what_its_checkpoints_measure(bundle):
    """The tiny bundle is too small to be accurate (accuracy 0, no correct solution
    for F1), so its numbers are checked against recomputation and their own counts."""
    out, summary = bundle
    tiny = PRESETS["tiny"]
    assert summary["greedy_accuracy"] == greedy_accuracy(out / "policy", test_split()[: tiny.eval_problems],
                                                         progress=False)
    shepherd = summary["labels"]["math_shepherd"]
    assert shepherd["records"] <= tiny.label_problems * tiny.label.samples_per_problem
    assert shepherd["completions_per_step"] == round(shepherd["completions"] / shepherd["measured_steps"], 2)
    for name in ("prm_quality", "step_tag_prm_quality"):
        quality = summary[name]
        assert quality["num_erroneous"] + quality["num_correct"] == quality["solutions"] <= (
            tiny.prm_eval_problems * tiny.prm_eval_samples)
        # ProcessBench F1 needs both kinds of solution; with one missing it is None, not a made-up number.
        assert (quality["f1"] is None) == (0 in (quality["num_erroneous"], quality["num_correct"]))
        assert quality["num_steps"] == summary["prm_quality"]["num_steps"] > 0  # both PRMs saw the same steps


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_bundle_serves_policy_and_prm(bundle, engine):
    out, _ = bundle
    candidates = [["12 + 7 = 19", "19 - 3 = 16", "The answer is \\boxed{16}"], ["12 + 7 = 20"]]
    expected = load_prm(out / "prm").score_batch([(QUESTION, steps) for steps in candidates])
    with ServerProcess(["--engine", engine, "--model", str(out)]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        model = client.models.list().data[0]
        assert model.id == out.name and model.model_extra["prm"] == f"{out.name}-prm"
        reply = client.chat.completions.create(model=model.id, messages=[{"role": "user", "content": QUESTION}],
                                               max_tokens=16, temperature=0)
        assert reply.usage.completion_tokens > 0
        scored = httpx.post(f"{server.base_url}/rewards", headers={"Authorization": f"Bearer {API_KEY}"},
                            json={"model": model.id, "question": QUESTION, "candidates": candidates}).json()
    assert [len(s) for s in scored["scores"]] == [3, 1]
    flat = [score for steps in scored["scores"] for score in steps]
    assert flat == pytest.approx([score for steps in expected for score in steps], abs=1e-5)


@pytest.fixture(scope="module")
def bundle_server(bundle):
    out, _ = bundle
    with ServerProcess(["--engine", "hf", "--model", str(out)]) as server:
        yield server, out.name


SMALL = {"max_steps": 3, "max_step_tokens": 12, "seed": 5}


def test_scale_out_front_uses_remote_engine_and_remote_prm(bundle_server):
    server, model = bundle_server
    args = ["--engine", "openai", "--model", server.base_url, "--prm", server.base_url,
            "--remote-api-key", API_KEY]
    candidates = [["12 + 7 = 19", "19 - 3 = 16"], ["12 + 7 = 20"]]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    direct = httpx.post(f"{server.base_url}/rewards", headers=headers,
                        json={"question": QUESTION, "candidates": candidates}).json()["scores"]
    with ServerProcess(args) as front:
        via_front = httpx.post(f"{front.base_url}/rewards", headers=headers,
                               json={"question": QUESTION, "candidates": candidates}).json()["scores"]
        client = openai.OpenAI(base_url=front.base_url, api_key=API_KEY, max_retries=0, timeout=300)
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}],
            extra_body={"search": {"strategy": "beam_search", "n": 4, "beam_width": 2, **SMALL, "return_trace": True}})
    assert via_front == direct
    assert r.model_extra["search_trace"]["prm_calls"] > 0 and r.usage.completion_tokens > 0


def test_every_sampling_and_prm_strategy_runs_at_n_256_under_the_default_limits(bundle_server):
    """n=256 is a first-class budget: the server's default --search-max-samples allows it
    and each strategy keeps its whole width (beam search: n per depth, beam_width kept)."""
    server, model = bundle_server
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=600)
    kept = {}
    for strategy, options in [("best_of_n", {}), ("majority_vote", {}), ("beam_search", {"beam_width": 16}),
                              ("particle_filtering", {})]:
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}],
            extra_body={"search": {"strategy": strategy, "n": 256, **options, **SMALL, "max_steps": 2,
                                   "return_trace": True}})
        trace = r.model_extra["search_trace"]
        assert trace["stop_reason"] is None and r.choices[0].message.content, (strategy, trace["stop_reason"])
        assert r.usage.completion_tokens > 256, strategy  # every sample drew at least one token
        kept[strategy] = len(trace["candidates"])
    assert kept == {"best_of_n": 256, "majority_vote": 256, "beam_search": 16, "particle_filtering": 256}
