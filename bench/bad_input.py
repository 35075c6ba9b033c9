"""Hostile and unsupported requests against any OpenAI-compatible server.

Sends each case of CASES to `/v1/chat/completions`, and of OTHER_CASES to
the other endpoints (text completions, rewards, tokenize), on one keep-alive
connection, each followed by a plain request on the same connection, and
counts: server errors (5xx or a dropped connection), requests accepted that
must be refused (a 2xx where a 4xx is due), and follow-ups that failed. Runs
as well against vLLM's own server as against `openr serve`, so the two can be
compared on the same model:

    openr serve --engine hf --model smollm2-135m-instruct &
    python -m bench.bad_input --base-url http://127.0.0.1:8000/v1 --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

DEEP = 100_000

# (name, body overrides or raw bytes, the status class that is right)
CASES: list[tuple[str, object, int]] = [
    ("content null", {"messages": [{"role": "user", "content": None}]}, 400),
    ("content missing", {"messages": [{"role": "user"}]}, 400),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400),
    ("no messages", {"messages": []}, 400),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    ("presence_penalty 5", {"presence_penalty": 5}, 400),
    ("frequency_penalty -3", {"frequency_penalty": -3}, 400),
    ("top_logprobs 100", {"logprobs": True, "top_logprobs": 100}, 400),
    ("top_logprobs without logprobs", {"top_logprobs": 2}, 400),
    ("logit_bias unknown token", {"logit_bias": {"99999999": 5}}, 400),
    ("logit_bias not an id", {"logit_bias": {"abc": 5}}, 400),
    ("logit_bias 500", {"logit_bias": {"1": 500}}, 400),
    ("stream 'yes'", {"stream": "yes"}, 400),
    ("stream_options without stream", {"stream_options": {"include_usage": True}}, 400),
    ("response_format nonsense", {"response_format": {"type": "yaml"}}, 400),
    ("response_format json_schema without schema", {"response_format": {"type": "json_schema"}}, 400),
    ("tools not a list", {"tools": {"type": "function"}}, 400),
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, 400),
    ("tool_choice required", {"tool_choice": "required"}, 400),
    ("n 0", {"n": 0}, 400),
    ("n '2'", {"n": "2"}, 400),
    ("n 10000", {"n": 10_000}, 400),
    ("temperature 3", {"temperature": 3}, 400),
    ("temperature 'hot'", {"temperature": "hot"}, 400),
    ("top_p 0", {"top_p": 0}, 400),
    ("max_tokens 0", {"max_tokens": 0}, 400),
    ("max_tokens -1", {"max_tokens": -1}, 400),
    ("max_tokens over the context", {"max_tokens": 10_000_000}, 400),
    ("five stop strings", {"stop": ["a", "b", "c", "d", "e"]}, 400),
    ("stop not a string", {"stop": 5}, 400),
    ("seed a string", {"seed": "x"}, 400),
    ("model unknown", {"model": "no-such-model"}, 404),
    ("audio", {"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, 400),
    ("prediction", {"prediction": {"type": "content", "content": "x"}}, 400),
    ("store true", {"store": True}, 400),
    ("search not an object", {"search": 5}, 400),
    ("search unknown strategy", {"search": {"strategy": "telepathy"}}, 400),
    ("search n -1", {"search": {"strategy": "majority_vote", "n": -1}}, 400),
    ("reasoning_effort extreme", {"reasoning_effort": "extreme"}, 400),
    ("logprobs with a search", {"reasoning_effort": "low", "logprobs": True}, 400),
    ("stop with a search", {"search": {"strategy": "majority_vote", "n": 2}, "stop": ["x"]}, 400),
    ("deep nesting", b'{"messages": [], "x": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400),
    ("deep nesting in messages", b'{"messages": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400),
    ("body not an object", b"[1, 2, 3]", 400),
    ("invalid UTF-8", b'{"messages": "\xff\xfe"}', 400),
    ("truncated JSON", b'{"messages": [', 400),
    ("empty body", b"", 400),
    ("100 MB of spaces", b" " * 100_000_000, 413),
    ("huge string", {"messages": [{"role": "user", "content": "word " * 2_000_000}]}, 413),  # 10 MB
    ("long prompt", {"messages": [{"role": "user", "content": "word " * 200_000}]}, 400),  # 1 MB, 200k tokens
    ("many messages", {"messages": [{"role": "user", "content": "hi"}] * 200_000}, 413),  # 7 MB
    ("20k messages", {"messages": [{"role": "user", "content": "hi"}] * 20_000}, 400),
    ("search with a prompt over the context", {"messages": [{"role": "user", "content": "word " * 200_000}],
                                               "search": {"strategy": "majority_vote", "n": 2}}, 400),
    ("top_p 1e-300 (0 in float32), sampled", {"top_p": 1e-300, "temperature": 1}, 200),
    ("search timeout_s NaN", b'{"messages": [{"role": "user", "content": "hi"}], "search": {"strategy": '
                             b'"majority_vote", "n": 2, "timeout_s": NaN}}', 400),
    ("search temperature Infinity", b'{"messages": [{"role": "user", "content": "hi"}], "search": {"strategy": '
                                    b'"majority_vote", "n": 2, "temperature": Infinity}}', 400),
]
# The other endpoints: (name, path under the server's root, body overrides, the status that is right)
OTHER_CASES: list[tuple[str, str, object, int]] = [
    ("completions: empty prompt", "/v1/completions", {"prompt": ""}, 400),
    ("completions: prompt as token ids", "/v1/completions", {"prompt": [1, 2, 3]}, 400),
    ("completions: echo", "/v1/completions", {"echo": True}, 400),
    ("completions: suffix", "/v1/completions", {"suffix": "!"}, 400),
    ("completions: best_of 3", "/v1/completions", {"best_of": 3}, 400),
    ("completions: logprobs 21", "/v1/completions", {"logprobs": 21}, 400),  # vLLM: 20 at most
    ("completions: top_p 1e-300, sampled", "/v1/completions", {"top_p": 1e-300, "temperature": 1}, 200),
    ("completions: n 10000", "/v1/completions", {"n": 10_000}, 400),
    ("tokenize: prompt and messages", "/tokenize", {"messages": [{"role": "user", "content": "hi"}]}, 400),
    ("tokenize: neither", "/tokenize", {"prompt": None}, 400),
    ("detokenize: id -1", "/detokenize", {"tokens": [-1]}, 400),
    ("detokenize: id 2**40", "/detokenize", {"tokens": [2**40]}, 400),
    ("detokenize: id 2**70", "/detokenize", {"tokens": [2**70]}, 400),
    ("detokenize: ids as strings", "/detokenize", {"tokens": ["1"]}, 400),
    ("rewards: no candidates", "/v1/rewards", {"question": "1+1?", "candidates": []}, 400),
    ("rewards: a candidate with no steps", "/v1/rewards", {"question": "1+1?", "candidates": [[]]}, 400),
    ("rewards: steps not strings", "/v1/rewards", {"question": "1+1?", "candidates": [[1, 2]]}, 400),
]
FINE = {"model": None, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2, "temperature": 0}
FINE_BY_PATH = {
    "/v1/completions": {"model": None, "prompt": "Say hi.", "max_tokens": 2, "temperature": 0},
    "/tokenize": {"model": None, "prompt": "Say hi."},
    "/detokenize": {"model": None, "tokens": [1]},
    "/v1/rewards": {"model": None, "question": "1+1?", "candidates": [["1+1=2"]]},
}


def body_of(overrides, model: str, path: str = "/v1/chat/completions") -> bytes:
    if isinstance(overrides, bytes):
        return overrides
    return json.dumps({**FINE_BY_PATH.get(path, FINE), "model": model, **overrides}).encode()


def run(base_url: str, model: str, api_key: str | None) -> dict:
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {api_key}"} if api_key else {})}
    results = []
    root = base_url.removesuffix("/").removesuffix("/v1")
    cases = [(name, "/v1/chat/completions", body, due) for name, body, due in CASES] + OTHER_CASES
    with httpx.Client(base_url=root, headers=headers, timeout=300) as http:
        for name, path, overrides, due in cases:
            try:
                status = http.post(path, content=body_of(overrides, model, path)).status_code
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}"
            try:
                follow_up = http.post("/v1/chat/completions", content=body_of({}, model)).status_code
            except httpx.HTTPError as exc:
                follow_up = f"{type(exc).__name__}"
            results.append({"case": name, "status": status, "due": due, "follow_up": follow_up})
            print(f"{name:45} {status!s:>5} (due {due}), follow-up {follow_up}", flush=True)
    server_errors = [r["case"] for r in results if not isinstance(r["status"], int) or r["status"] >= 500]
    accepted = [r["case"] for r in results if isinstance(r["status"], int) and r["status"] < 300 <= r["due"]]
    wrong_4xx = [r["case"] for r in results if isinstance(r["status"], int) and 300 <= r["status"] < 500
                 and r["status"] != r["due"]]  # a refusal of the wrong kind, or of a request due an answer
    broken_follow_ups = [r["case"] for r in results if r["follow_up"] != 200]
    return {"cases": len(results), "server_errors": server_errors, "accepted_but_due_refusal": accepted,
            "other_4xx_than_due": wrong_4xx, "follow_ups_failed": broken_follow_ups, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="the server's /v1 URL")
    parser.add_argument("--model", required=True, help="the served model's name")
    parser.add_argument("--api-key", help="sent as a Bearer token")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    summary = run(args.base_url, args.model, args.api_key)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    return 1 if summary["server_errors"] or summary["accepted_but_due_refusal"] or summary["follow_ups_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
