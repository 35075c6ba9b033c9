"""What the HTTP server costs: the same greedy requests straight through the
engine and through `/v1/chat/completions`, side by side in one run.

One loaded engine: the app is served by uvicorn in this process's event loop
(the loop `openr serve` gets: uvloop where installed; no access log) on top of
that very engine, so every path shares weights, caches and the machine's
state. Each round runs the direct side and the HTTP side with each client,
the three taking turns going first, to spread the noise of a shared machine
evenly. The HTTP clients run in a process of their own, as a real client
does (they share the machine's cores, not the server's event loop). `--client
in-process` runs them in the server's event loop instead: then the server
pays for the clients' work too.

Three HTTP figures are kept, each over the direct side's latency (goal <= 1.10):
- sdk: the round as the OpenAI SDK times it, the client's own work included
  (the SDK prepares and parses each request in Python: on an AMD EPYC core
  about 1 ms per request, so 8 concurrent requests reach the server over
  ~6 ms, and their answers take it ~4 ms more to parse);
- sdk, server span: in those same rounds, from the first request's arrival at
  the server to its last answer sent (timed by an ASGI wrapper around the
  app). Requests the SDK sends late stretch it too;
- raw: a client that costs next to nothing, timing the round itself: each
  request's bytes are built once, written on kept-alive connections all at
  once, and only the answer's length and usage are read. This is what serving
  over HTTP adds to the engine: uvicorn, routing, parsing and validation, the
  chat template, queueing and the answer's JSON.
Prints, per engine and batch size: tokens/s of the direct and sdk paths and
the three ratios.

    python -m bench.serve_overhead --engines hf vllm --batches 1 8 --out bench/results/serve_overhead.json

`--out` writes the same rows, with the command, the machine and the date, to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time

from bench.results_file import add_result_flags, write_result

MESSAGES = [{"role": "user", "content": "Write a short poem about the sea."}]
DEFAULT_MAX_TOKENS = 48
SIDES = ("direct", "sdk", "raw")


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


class _RawClient:
    """An HTTP client that costs next to nothing, so that a round's time is the
    server's: each request is built as bytes once, a round writes them on
    kept-alive connections all at once, and each answer is read by its
    Content-Length. No library does that (each builds every request anew);
    that work is the SDK's cost, which the `sdk` figure keeps."""

    def __init__(self, port: int):
        self.port = port
        self.connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def run(self, batch: int, max_tokens: int) -> tuple[float, int]:
        self.connections = [c for c in self.connections if not c[0].at_eof()]  # the server closed idle ones
        while len(self.connections) < batch:
            self.connections.append(await asyncio.open_connection("127.0.0.1", self.port))
        body = json.dumps({"model": "bench", "messages": MESSAGES, "max_tokens": max_tokens,
                           "temperature": 0}).encode()
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                   b"content-length: %d\r\n\r\n%s" % (len(body), body))
        start = time.perf_counter()
        for _, writer in self.connections[:batch]:
            writer.write(request)
        answers = await asyncio.gather(*[_read_answer(reader) for reader, _ in self.connections[:batch]])
        return time.perf_counter() - start, sum(a["usage"]["completion_tokens"] for a in answers)


async def _read_answer(reader: asyncio.StreamReader) -> dict:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
    body = await reader.readexactly(length)
    if not head.startswith("http/1.1 200"):
        raise RuntimeError(f"the server answered {head.splitlines()[0]}: {body[:300]!r}")
    return json.loads(body)


def _client_process(port: int, conn) -> None:
    """The HTTP side's clients, in their own process: runs each (client, batch,
    max_tokens) it is sent, on the OpenAI SDK or the raw client, and sends back
    (seconds, tokens)."""
    import openai

    async def serve_commands() -> None:
        sdk = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        raw = _RawClient(port)
        while (command := await asyncio.to_thread(conn.recv)) is not None:
            kind, batch, max_tokens = command
            if kind == "sdk":
                conn.send(await _http(sdk, "bench", batch, max_tokens))
            else:
                conn.send(await raw.run(batch, max_tokens))

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
    """The HTTP side's clients: in a process of their own (the default) or in this event loop."""

    def __init__(self, port: int, where: str):
        import openai

        self.process = self.conn = self.client = self.raw = None
        if where == "in-process":
            self.client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
            self.raw = _RawClient(port)
            return
        self.conn, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(target=_client_process, args=(port, theirs),
                                                                    daemon=True)
        self.process.start()

    async def run(self, kind: str, batch: int, max_tokens: int) -> tuple[float, int]:
        if self.client is not None:
            return await (_http(self.client, "bench", batch, max_tokens) if kind == "sdk"
                          else self.raw.run(batch, max_tokens))
        self.conn.send((kind, batch, max_tokens))
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
    from openr.server.launcher import free_port

    _, device, _ = choose_engine(kind)
    engine = make_engine(kind, split_bundle(model)[0], device, max_model_len=max_model_len)  # a bundle's policy
    await engine.start()
    app = _ServerSpan(build_app(engine, "bench", start_engine=False))
    port = free_port()
    # As `openr serve` runs it, with its access log off (--disable-uvicorn-access-log; each line costs ~75 us)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_keep_alive=30))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    client = _Client(port, client_where)
    prompt = (await engine.prepare_chat(MESSAGES)).text
    rows = []
    try:
        for batch in batches:  # warm every path, and open the clients' connections
            await _direct(engine, prompt, batch, 4)
            await client.run("sdk", batch, 4)
            await client.run("raw", batch, 4)
        for batch in batches:
            times: dict[str, list] = {"direct": [], "sdk": [], "served": [], "raw": []}
            for i in range(rounds):
                for side in SIDES[i % 3:] + SIDES[:i % 3]:  # each side goes first, second and third in turn
                    if side == "direct":
                        times["direct"].append(await _direct(engine, prompt, batch, max_tokens))
                        continue
                    app.reset()
                    times[side].append(await client.run(side, batch, max_tokens))
                    if side == "sdk":
                        times["served"].append(app.seconds)
            rows.append(_summarise(kind, batch, **times))
    finally:
        client.close()
        server.should_exit = True
        await serving
        await engine.close()
    return rows


def _serving_loop():
    """The event loop `openr serve` runs on: uvicorn's choice (uvloop where it is installed)."""
    import uvicorn

    return uvicorn.Config(app=None).get_loop_factory()


def _summarise(kind: str, batch: int, direct: list, sdk: list, served: list[float], raw: list) -> dict:
    d_time = statistics.median(t for t, _ in direct)
    s_time = statistics.median(t for t, _ in sdk)
    return {"engine": kind, "batch": batch, "direct_tok_s": direct[0][1] / d_time, "http_tok_s": sdk[0][1] / s_time,
            "ratio": s_time / d_time, "server_ratio": statistics.median(served) / d_time,
            "raw_ratio": statistics.median(t for t, _ in raw) / d_time,
            "overhead_ms": {"sdk": 1000 * (s_time - d_time),
                            "raw": 1000 * (statistics.median(t for t, _ in raw) - d_time)},
            "tokens": (direct[0][1], sdk[0][1], raw[0][1])}


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
    add_result_flags(parser)
    args = parser.parse_args(argv)
    rows = []
    for kind in args.engines:
        with asyncio.Runner(loop_factory=_serving_loop()) as runner:
            rows += runner.run(bench_engine(kind, args.model, args.batches, args.rounds, args.max_tokens,
                                            args.max_model_len, args.client))
    print("\n| engine | batch | direct tok/s | sdk tok/s | HTTP/direct latency: sdk | sdk, server span | raw | "
          "added ms: sdk, raw | tokens (direct, sdk, raw) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['engine']} | {r['batch']} | {r['direct_tok_s']:.1f} | {r['http_tok_s']:.1f} | "
              f"{r['ratio']:.3f} | {r['server_ratio']:.3f} | {r['raw_ratio']:.3f} | "
              f"{r['overhead_ms']['sdk']:.1f}, {r['overhead_ms']['raw']:.1f} | {r['tokens']} |")
    write_result(args.out, "serve_overhead", argv, args.note,
                 {"rounds": args.rounds, "max_tokens": args.max_tokens, "client": args.client, "rows": rows})


if __name__ == "__main__":
    main()
