"""The FastAPI app: thin routes over the serving logic, plus the cross-cutting
parts every route shares (request ids, auth, admission, disconnects, errors)."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from openr.contracts import ScorerError
from openr.engine.base import Engine
from openr.prm.batcher import MicroBatchingScorer
from openr.server import chat, completions, rewards
from openr.server.admission import Admission
from openr.server.base import ServingContext
from openr.server.errors import APIError, bad_request, error_body, error_response
from openr.server.metrics import ServerMetrics
from openr.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    RewardRequest,
    TokenizeRequest,
)
from openr.server.responses import ModelCard, ModelList
from openr.server.settings import ServerSettings

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"


class ClientDisconnected(Exception):
    pass


def build_app(engine: Engine, model_name: str, settings: ServerSettings = ServerSettings(), *,
              start_engine: bool = True, started_at: float | None = None, prm_factory=None,
              prm_name: str | None = None) -> FastAPI:
    """The whole server. With `start_engine`, the engine (and the PRM that
    `prm_factory()` builds, if any) load in the background at start-up and
    `/health` answers 503 until they are ready."""
    metrics = ServerMetrics(model_name)
    metrics.bind(engine)
    ctx = ServingContext(engine, model_name, metrics, settings)
    ready = asyncio.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.admission = Admission(settings.max_concurrent, settings.max_queue, metrics)
        task = asyncio.create_task(_load(ctx, prm_factory, ready, started_at)) if start_engine else None
        if not start_engine:
            ready.set()
        yield
        if task:
            task.cancel()
        await engine.close()

    app = FastAPI(title="OpenR serve", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.ready = ready
    app.state.max_request_bytes = settings.max_request_bytes
    app.add_middleware(RequestIdAndAuth, api_key=settings.api_key)
    _add_error_handlers(app)

    @app.get("/health")
    async def health():
        if not ready.is_set():
            return JSONResponse(error_body(503, "the model is still loading"), status_code=503)
        return Response(status_code=200)

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def list_models():
        card = ModelCard(id=model_name, root=model_name, max_model_len=engine.max_model_len or None,
                         prm=prm_name if ctx.prm is not None else None)
        return ModelList(data=[card]).model_dump()

    machine: dict = {}  # the serving machine, read once

    @app.get("/version")
    async def version():
        """What answered: the server's version, model, engine, device and dtype, the
        machine and the serving settings (no API key), as `openr eval` records them."""
        from openr import __version__
        from openr.hardware import machine_info

        if not machine:
            machine.update(await asyncio.to_thread(machine_info))
        config = dataclasses.asdict(settings)
        config.pop("api_key")
        config["search"].pop("auto_table", None)
        return {"version": __version__, "model": model_name, "engine": engine.name, "device": engine.device,
                "dtype": engine.dtype, "max_model_len": engine.max_model_len,
                "prm": prm_name if ctx.prm is not None else None, "machine": machine,
                "settings": config}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _parse(request, ChatCompletionRequest)
        return await _serve(request, lambda: chat.create_chat_completion(ctx, body))

    @app.post("/v1/completions")
    async def text_completions(request: Request):
        body = await _parse(request, CompletionRequest)
        return await _serve(request, lambda: completions.create_completion(ctx, body))

    @app.post("/v1/rewards")
    async def step_rewards(request: Request):
        body = await _parse(request, RewardRequest)
        return await _serve(request, lambda: rewards.score_steps(ctx, body))

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await _parse(request, TokenizeRequest)
        return await completions.tokenize(ctx, body)

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await _parse(request, DetokenizeRequest)
        return await completions.detokenize(ctx, body)

    return app


async def _load(ctx: ServingContext, prm_factory, ready: asyncio.Event, started_at: float | None) -> None:
    engine = ctx.engine
    try:
        await engine.start()
        if prm_factory is not None:
            scorer = await asyncio.to_thread(prm_factory)
            ctx.metrics.bind_prm(scorer)
            ctx.prm = MicroBatchingScorer(scorer, ctx.settings.prm_micro_batch_size, ctx.settings.prm_max_wait_ms,
                                          on_batch=ctx.metrics.prm_batch, on_queue=ctx.metrics.prm_queue_depth)
    except Exception:
        logger.exception("the engine failed to start; /health stays 503")
        return
    ready.set()
    took = f" in {time.perf_counter() - started_at:.1f} s" if started_at else ""
    logger.info("ready%s: %s engine on %s, context %d tokens", took, engine.name, engine.device,
                engine.max_model_len)


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel:
    """Body → request model, with every failure a 400 (never FastAPI's 422)."""
    if not request.app.state.ready.is_set():
        raise APIError(503, "the model is still loading; poll /health", code="model_loading")
    content_type = request.headers.get("content-type", "")
    if "application/json" not in content_type.lower():
        raise bad_request(f"Content-Type must be application/json, got {content_type or 'none'!r}",
                          code="invalid_content_type")
    raw = await _read_body(request, request.app.state.max_request_bytes)
    # pydantic's own JSON parser: a recursion limit (deep nesting is a 400, not a
    # RecursionError), strict types, and no second pass over a Python dict.
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("json_invalid", "json_type"):
            raise bad_request(f"request body is not a valid JSON object: {first['msg']}", code="invalid_json") \
                from exc
        if first["type"] == "model_type" and not first["loc"]:
            raise bad_request("request body must be a JSON object", code="invalid_json") from exc
        raise
    ignored = getattr(parsed, "ignored_fields", lambda: [])()
    if ignored:
        logger.warning("ignoring unsupported request fields: %s", ", ".join(ignored))
    return parsed


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it is known to pass `limit` bytes
    (from Content-Length, or while it streams in), never read whole first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body of {declared} bytes is over this server's limit of {limit} "
                            "(--max-request-bytes)", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is over this server's limit of {limit} bytes (--max-request-bytes)",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _serve(request: Request, handler: Callable[[], Awaitable]) -> Response:
    """Run a generation handler inside an admission slot; stop it if the client hangs up."""
    slot = await request.app.state.admission.acquire()
    try:
        result = await _cancel_on_disconnect(request, handler())
    except BaseException:
        slot.release()
        raise
    if isinstance(result, BaseModel):
        slot.release()
        return Response(result.model_dump_json(), media_type="application/json")  # pydantic's serializer, in Rust
    # Streaming: the slot is held until the stream ends or the client leaves.
    return StreamingResponse(_release_after(result, slot), media_type="text/event-stream",
                             background=BackgroundTask(slot.release))


async def _release_after(lines, slot):
    try:
        async for line in lines:
            yield line
    finally:
        await lines.aclose()
        slot.release()


async def _cancel_on_disconnect(request: Request, work: Awaitable):
    """Await `work`, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def wait_disconnect():
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(wait_disconnect())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise ClientDisconnected()
    return task.result()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(ClientDisconnected)
    async def disconnected(_: Request, exc: ClientDisconnected):
        return Response(status_code=499)  # nobody is listening; for the access log only

    @app.exception_handler(ScorerError)
    async def prm_failed(_: Request, exc: ScorerError):
        return error_response(exc)  # a remote PRM's refusal or outage, as the local PRM's errors read

    @app.exception_handler(ValidationError)
    async def invalid_body(_: Request, exc: ValidationError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        return error_response(bad_request(str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        return error_response(exc)


class RequestIdAndAuth:
    """Pure ASGI middleware (it must not buffer streams): echoes or creates
    X-Request-Id on every response, guards /v1/* with the API key, and answers
    an unexpected error with an OpenAI-shaped 500 itself. (Starlette's handler
    for `Exception` sends its answer and then re-raises, and uvicorn then
    drops the connection, failing the client's next request on it too.)"""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        request_id = headers.get(REQUEST_ID_HEADER.encode(), b"").decode() or uuid.uuid4().hex

        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        if self.api_key and scope["path"].startswith("/v1/") and not self._authorized(headers):
            response = JSONResponse(error_body(401, "invalid or missing API key: send 'Authorization: Bearer "
                                                    "<key>'", code="invalid_api_key"), status_code=401)
            return await response(scope, receive, send_with_id)
        try:
            return await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # the answer is half sent: only dropping the connection can tell the client
                raise
            await error_response(exc)(scope, receive, send_with_id)  # logs it as an internal error

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        value = headers.get(b"authorization", b"")
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)
