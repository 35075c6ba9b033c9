"""What the HTTP server costs: the same greedy requests straight through the
engine and through `/v1/chat/completions`, side by side in one run.

One loaded engine: the app is served by uvicorn in this process's event loop
on top of that very engine, so both paths share weights, caches and the
machine's state, and rounds alternate (direct, HTTP, direct, ...) to spread the
noise of a shared machine evenly. The HTTP side is timed by its client, the
OpenAI SDK, which runs in a process of its own as a real client does (it
shares the machine's cores, not the server's event loop). `--client
in-process` runs the SDK in the server's event loop instead: then the server
pays for the client's work too.

Two HTTP figures, each over the direct side's latency (goal <= 1.10):
- client: the round as the SDK times it, the client's own work included (the
  SDK prepares and parses each request in Python: on an AMD EPYC core about
  10 ms before the first of 8 concurrent requests reaches the server, and
  5 ms after the last answer leaves it);
- server: from the first request's arrival at the server to its last answer
  sent (timed by an ASGI wrapper around the app), i.e. what serving over HTTP
  adds to the engine: parsing, validation, the chat template, queueing and
  the answer's JSON. Requests the client sends late stretch it too.
Prints, per engine and batch size: tokens/s of each path and both ratios.

    python bench/serve_overhead.py --engines hf vllm --batches 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
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


def _client_process(port: int, conn) -> None:
    """The HTTP side's client, in its own process: runs each (batch, max_tokens)
    it is sent through the OpenAI SDK and sends back (seconds, tokens)."""
    import openai

    async def serve_commands() -> None:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        while (command := await asyncio.to_thread(conn.recv)) is not None:
            conn.send(await _http(client, "bench", *command))

    asyncio.run(serve_commands())


class _ServerSpan:
    """ASGI wrapper: when the first request of a round arrived and its last
    answer's final byte left (`reset` before each round)."""

    def __init__(self, app):
        self.app = app
        self.reset()

    def reset(self) -> None:
        self.first = self.last = None

    @property
    def seconds(self) -> float:
        return self.last - self.first

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        now = time.perf_counter()
        self.first = now if self.first is None else min(self.first, now)

        async def timed_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last = time.perf_counter()

        await self.app(scope, receive, timed_send)


class _Client:
    """The HTTP side: an SDK client in a process of its own (the default) or in this event loop."""

    def __init__(self, port: int, where: str):
        import openai

        self.process = self.conn = self.client = None
        if where == "in-process":
            self.client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
            return
        self.conn, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(target=_client_process, args=(port, theirs),
                                                                    daemon=True)
        self.process.start()

    async def run(self, batch: int, max_tokens: int) -> tuple[float, int]:
        if self.client is not None:
            return await _http(self.client, "bench", batch, max_tokens)
        self.conn.send((batch, max_tokens))
        return await asyncio.to_thread(self.conn.recv)

    def close(self) -> None:
        if self.process is not None:
            self.conn.send(None)
            self.process.join(timeout=30)


async def bench_engine(kind: str, model: str, batches: list[int], rounds: int, max_tokens: int,
                       max_model_len: int | None = None, client_where: str = "process") -> list[dict]:
    import uvicorn

    from openr.engine import choose_engine, make_engine
    from openr.engine.checkpoints import split_bundle
    from openr.server.app import build_app

    _, device, _ = choose_engine(kind)
    engine = make_engine(kind, split_bundle(model)[0], device, max_model_len=max_model_len)  # a bundle's policy
    await engine.start()
    app = _ServerSpan(build_app(engine, "bench", start_engine=False))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    client = _Client(port, client_where)
    prompt = (await engine.prepare_chat(MESSAGES)).text
    rows = []
    try:
        for batch in batches:  # warm both paths, and open the client's connections
            await _direct(engine, prompt, batch, 4)
            await client.run(batch, 4)
        for batch in batches:
            direct, http, served = [], [], []
            for _ in range(rounds):
                direct.append(await _direct(engine, prompt, batch, max_tokens))
                app.reset()
                http.append(await client.run(batch, max_tokens))
                served.append(app.seconds)
            rows.append(_summarise(kind, batch, direct, http, served))
    finally:
        client.close()
        server.should_exit = True
        await serving
        await engine.close()
    return rows


def _summarise(kind: str, batch: int, direct: list, http: list, served: list[float]) -> dict:
    d_time = statistics.median(t for t, _ in direct)
    h_time = statistics.median(t for t, _ in http)
    return {"engine": kind, "batch": batch, "direct_tok_s": direct[0][1] / d_time, "http_tok_s": http[0][1] / h_time,
            "ratio": h_time / d_time, "server_ratio": statistics.median(served) / d_time,
            "tokens": (direct[0][1], http[0][1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--model", default=None, help="model or bundle, as `openr serve --model` takes it "
                                                      "(default: the server's default, openr-arith)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="concurrent requests per round")
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per setting (median is kept)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length of the engine (default: the model's own; vLLM refuses more, and "
                             "2048 keeps a long-context model's KV cache small)")
    parser.add_argument("--client", choices=["process", "in-process"], default="process",
                        help="where the HTTP side's OpenAI SDK client runs: its own process (as a real client), "
                             "or this event loop, which then does the client's work too")
    args = parser.parse_args(argv)
    rows = []
    for kind in args.engines:
        rows += asyncio.run(bench_engine(kind, args.model, args.batches, args.rounds, args.max_tokens,
                                         args.max_model_len, args.client))
    print("\n| engine | batch | direct tok/s | HTTP tok/s | HTTP/direct latency, client | server | "
          "tokens (direct, HTTP) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['engine']} | {r['batch']} | {r['direct_tok_s']:.1f} | {r['http_tok_s']:.1f} | "
              f"{r['ratio']:.3f} | {r['server_ratio']:.3f} | {r['tokens']} |")


if __name__ == "__main__":
    main()
