"""The app in this process, over ASGI, with a fake engine: an httpx client and
the OpenAI SDK pointed at it, for the app-layer tests."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import openai

from openr.server.app import build_app
from openr.server.settings import ServerSettings
from tests.support.fake_engine import FakeEngine

MODEL = "fake-model"


@asynccontextmanager
async def serving(engine=None, settings: ServerSettings = ServerSettings(), **kwargs):
    engine = engine or FakeEngine()
    app = build_app(engine, MODEL, settings, **kwargs)
    async with app.router.lifespan_context(app):
        await app.state.ready.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sdk = openai.AsyncOpenAI(base_url="http://test/v1", api_key=settings.api_key or "none",
                                     http_client=http, max_retries=0)
            yield http, sdk, engine
