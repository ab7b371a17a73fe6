"""The API app factory: ``create_app(settings)``; Redis, the job store and the chunk bus live in the lifespan."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.common import keys
from corral.common.connections import async_redis, sync_redis
from corral.common.fastredis import fast_redis
from corral.common.janitor import Janitor
from corral.common.jobs import Limits
from corral.common.registry import VERSION
from corral.common.schemas import BatchRequest, JobRequest
from corral.common.settings import Settings, redacted_url
from corral.common.store import AsyncJobStore, JobStore

from . import errors
from .apikeys import parse_api_keys
from .auth import Authenticate
from .body import add_body_schemas
from .bus import ChunkHub
from .limits import BodyLimit
from .routes import dashboard, fleet, jobs, metrics, ollama_api, openai_api

log = logging.getLogger("corral.api")


DropinEndpoint = Callable[[Request, AsyncJobStore, Settings, Any, ChunkHub], Awaitable[Response]]


Handler = Callable[[Request], Awaitable[Response]]


def plain(endpoint: DropinEndpoint) -> Handler:
    """A drop-in endpoint (request, store, settings, redis, hub) as a handler taking the request only."""

    async def handle(request: Request) -> Response:
        state = request.app.state
        return await endpoint(request, state.store, state.settings, state.redis, state.hub)

    handle.__name__ = endpoint.__name__
    return handle


class HotRoutes:
    """The submit paths' fast lane: a ``POST`` to one of ``routes`` goes straight to its handler, past Starlette's
    exception middleware, FastAPI's exit-stack middleware and the router, each an ASGI layer of its own on every
    request (the app's other routes, and these paths' other methods, go down the stack as before). An exception
    raised before the response starts gets the app's handler for it, as the router's wrapper would give it; a
    handler-less one goes up to the server-error middleware."""

    def __init__(self, app: ASGIApp, routes: dict[str, Handler], handlers: dict[Any, Any]) -> None:
        self.app = app
        self.routes = routes
        self.handlers = handlers  # the app's own dict: handlers installed later are seen too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            on_error = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
            if on_error is None:
                raise
            response = await on_error(request, exc)
        await response(scope, receive, send)


def native_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry hooks (FastAPI >= 0.16x): kept when a provider is configured at start-up
    (``opentelemetry-instrument``, an SDK set up before the app), else turned off. Left on with nothing configured,
    they look the global providers up again on every request to find nothing: ~30 us of a submit's CPU."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    try:
        from opentelemetry import _logs, metrics, trace
    except ImportError:
        return {}
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider())
    if any(not type(p).__name__.startswith(("Proxy", "_Proxy", "NoOp")) for p in providers):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = async_redis(settings.redis_url, name="corral-api")
        hub = ChunkHub(async_redis(settings.redis_url, name="corral-api-bus"), url=settings.redis_url)
        app.state.settings = settings
        app.state.redis = client
        fast = fast_redis(settings.redis_url)
        app.state.store = AsyncJobStore(client, Limits.from_settings(settings), fast=fast)
        app.state.hub = hub
        await hub.start()
        janitor_client = sync_redis(settings.redis_url, name="corral-api-janitor")
        _thread, janitor_stop = Janitor(
            JobStore(janitor_client, Limits.from_settings(settings)),
            settings.heartbeat_ttl,
            settings.janitor_interval,
        ).start()
        log.info("corral api ready; redis %s", redacted_url(settings.redis_url))
        if not parse_api_keys(settings.api_keys.get_secret_value()) and not await client.exists(
            keys.AUTH_REQUIRED
        ):
            log.warning(
                "no API keys configured: the API is UNAUTHENTICATED (anyone who reaches it may submit jobs); "
                "set CORRAL_API_KEYS or run `corral keys create`"
            )
        try:
            yield
        finally:
            janitor_stop.set()
            janitor_client.close()
            await hub.stop()
            await hub.client.aclose(close_connection_pool=True)
            await client.aclose(close_connection_pool=True)
            if fast is not None:
                await fast.aclose()

    app = FastAPI(
        title="Corral",
        version=VERSION,
        description="One endpoint for a fleet of Ollama hosts: per-model Redis queues, streamed results.",
        lifespan=lifespan,
        **native_telemetry(),
    )
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(fleet.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    app.include_router(ollama_api.router)
    app.include_router(openai_api.router)
    # the hot paths as plain handlers ahead of FastAPI's routes (which stay for the OpenAPI document): FastAPI's
    # routing and endpoint machinery cost 0.2-0.4 ms per submit, more than the rest of the handler; they are reached
    # through the fast lane (HotRoutes), and through plain Starlette routes ahead of FastAPI's for anything that
    # goes down the stack
    hot: dict[str, Handler] = {"/jobs": jobs.submit_job}
    hot |= {path: plain(endpoint) for path, endpoint in (
        ("/api/generate", ollama_api.generate), ("/api/chat", ollama_api.chat),
        ("/v1/chat/completions", openai_api.chat_completions), ("/v1/completions", openai_api.completions),
    )}  # fmt: skip
    app.router.routes[:0] = [
        Route(path, handler, methods=["POST"], name=f"{handler.__name__}_fast")
        for path, handler in hot.items()
    ]
    add_body_schemas(app, [JobRequest, BatchRequest])
    # added first, so it runs last of the three: after the key check and the body limit
    app.add_middleware(HotRoutes, routes=hot, handlers=app.exception_handlers)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # added last, so it runs first: a caller without a valid key gets 401 before its body is read
    app.add_middleware(Authenticate, settings=settings)
    return app
