"""What the HTTP server costs: the same greedy requests straight through the
engine and through `/v1/chat/completions`, side by side in one run.

One process, one loaded engine: the app is served by uvicorn in this event loop
on top of that very engine, so both paths share weights, caches and the
machine's state, and rounds alternate (direct, HTTP, direct, ...) to spread the
noise of a shared machine evenly. The HTTP figures include the client's own
work (the OpenAI SDK runs in this process). Prints, per engine and batch size:
tokens/s of each path and the HTTP/direct latency ratio (goal <= 1.10).

    python bench/serve_overhead.py --engines hf vllm --batches 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time

MESSAGES = [{"role": "user", "content": "Write a short poem about the sea."}]
DEFAULT_MAX_TOKENS = 48


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _direct(engine, prompt: str, batch: int, max_tokens: int) -> tuple[float, int]:
    from openr.engine.base import SamplingConfig

    config = SamplingConfig(max_tokens=max_tokens, temperature=0.0)
    start = time.perf_counter()
    outs = await asyncio.gather(*[engine.complete(prompt, config) for _ in range(batch)])
    return time.perf_counter() - start, sum(o.num_tokens for o in outs)


async def _http(client, model: str, batch: int, max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    outs = await asyncio.gather(*[
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=max_tokens, temperature=0)
        for _ in range(batch)])
    return time.perf_counter() - start, sum(o.usage.completion_tokens for o in outs)


async def bench_engine(kind: str, model: str, batches: list[int], rounds: int, max_tokens: int,
                       max_model_len: int | None = None) -> list[dict]:
    import openai
    import uvicorn

    from openr.engine import choose_engine, make_engine
    from openr.engine.checkpoints import split_bundle
    from openr.server.app import build_app

    _, device, _ = choose_engine(kind)
    engine = make_engine(kind, split_bundle(model)[0], device, max_model_len=max_model_len)  # a bundle's policy
    await engine.start()
    app = build_app(engine, "bench", start_engine=False)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    prompt = (await engine.prepare_chat(MESSAGES)).text
    rows = []
    try:
        await _direct(engine, prompt, 1, 4)  # warm both paths once
        await _http(client, "bench", 1, 4)
        for batch in batches:
            direct, http = [], []
            for _ in range(rounds):
                direct.append(await _direct(engine, prompt, batch, max_tokens))
                http.append(await _http(client, "bench", batch, max_tokens))
            rows.append(_summarise(kind, batch, direct, http))
    finally:
        server.should_exit = True
        await serving
        await engine.close()
    return rows


def _summarise(kind: str, batch: int, direct: list, http: list) -> dict:
    d_time = statistics.median(t for t, _ in direct)
    h_time = statistics.median(t for t, _ in http)
    return {"engine": kind, "batch": batch, "direct_tok_s": direct[0][1] / d_time, "http_tok_s": http[0][1] / h_time,
            "ratio": h_time / d_time, "tokens": (direct[0][1], http[0][1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--model", default=None, help="model or bundle, as `openr serve --model` takes it "
                                                      "(default: the server's default, openr-arith)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="concurrent requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per setting (median is kept)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length of the engine (default: the model's own; vLLM refuses more, and "
                             "2048 keeps a long-context model's KV cache small)")
    args = parser.parse_args(argv)
    rows = []
    for kind in args.engines:
        rows += asyncio.run(bench_engine(kind, args.model, args.batches, args.rounds, args.max_tokens,
                                         args.max_model_len))
    print("\n| engine | batch | direct tok/s | HTTP tok/s | HTTP/direct latency | tokens (direct, HTTP) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['engine']} | {r['batch']} | {r['direct_tok_s']:.1f} | {r['http_tok_s']:.1f} | "
              f"{r['ratio']:.3f} | {r['tokens']} |")


if __name__ == "__main__":
    main()
