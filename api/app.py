"""The API app factory: ``create_app(settings)``; Redis, the job store and the chunk bus live in the lifespan."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from corral.common import keys
from corral.common.connections import TRANSIENT, async_redis, sync_redis
from corral.common.fastredis import fast_redis
from corral.common.janitor import Janitor
from corral.common.jobs import Limits
from corral.common.link import enabled as direct_link
from corral.common.registry import VERSION
from corral.common.schemas import BatchRequest, JobRequest
from corral.common.settings import Settings, redacted_url
from corral.common.store import AsyncJobStore, JobStore

from . import apidocs, errors
from .apikeys import parse_api_keys
from .auth import Authenticate
from .body import add_body_schemas
from .bus import ChunkHub
from .fastlane import FastLane, fast_routes
from .limits import BodyLimit
from .link import LinkServer
from .routes import dashboard, fleet, hosts, jobs, metrics, models, ollama_api, ollama_models, openai_api

log = logging.getLogger("corral.api")


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


async def warn_if_open(client: Any, settings: Settings) -> None:
    """Warn when no API key is required: none configured here, none stored in Redis (``corral keys``). A Redis that
    does not answer yet (started after the API) is not waited for: requests read the flag themselves (api/auth.py)."""
    if parse_api_keys(settings.api_keys.get_secret_value()):
        return
    try:
        required = await client.exists(keys.AUTH_REQUIRED)
    except TRANSIENT as exc:
        log.warning("redis at %s does not answer yet (%s); the API answers 503 until it does",
                    redacted_url(settings.redis_url), exc)  # fmt: skip
        return
    if not required:
        log.warning(
            "no API keys configured: the API is UNAUTHENTICATED (anyone who reaches it may submit jobs); "
            "set CORRAL_API_KEYS or run `corral keys create`"
        )


def lifespan_of(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: Redis clients, the job store, the chunk bus, the direct link and the janitor, closed at
    the end."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = async_redis(settings.redis_url, name="corral-api")
        hub = ChunkHub(
            async_redis(settings.redis_url, name="corral-api-bus"),
            url=settings.redis_url,
            trim_memory=settings.trim_memory,
        )
        app.state.settings = settings
        app.state.redis = client
        fast = fast_redis(settings.redis_url)
        app.state.store = AsyncJobStore(client, Limits.from_settings(settings), fast=fast)
        app.state.hub = hub
        await hub.start()
        link = LinkServer(client, hub.reply_channel, settings.link_host or settings.api_host, hub.direct)
        app.state.link = link
        if direct_link(settings.direct_link, settings.redis_url):
            await link.start()
            hub.hand_early = link.hand_early
        janitor_client = sync_redis(settings.redis_url, name="corral-api-janitor")
        _thread, janitor_stop = Janitor(
            JobStore(janitor_client, Limits.from_settings(settings)),
            settings.heartbeat_ttl,
            settings.janitor_interval,
        ).start()
        await warn_if_open(client, settings)
        log.info("corral api ready; redis %s", redacted_url(settings.redis_url))
        try:
            yield
        finally:
            janitor_stop.set()
            janitor_client.close()
            await link.stop()
            await hub.stop()
            await hub.client.aclose(close_connection_pool=True)
            await client.aclose(close_connection_pool=True)
            if fast is not None:
                await fast.aclose()

    return lifespan


def create_app(settings: Settings) -> FastAPI:
    """The API app for ``settings``: routes, error handlers, and the middleware of keys, body size and fast lane."""
    app = FastAPI(
        title="Corral",
        version=VERSION,
        description="One endpoint for a fleet of Ollama hosts: per-model Redis queues, streamed results.",
        lifespan=lifespan_of(settings),
        docs_url=None,  # apidocs serves /docs and /redoc from packaged assets, not a CDN
        redoc_url=None,
        **native_telemetry(),
    )
    errors.install(app)
    apidocs.install(app)
    routers = (
        jobs.router,
        fleet.router,
        metrics.router,
        dashboard.router,
        hosts.router,
        ollama_api.router,
        openai_api.router,
        models.router,
        ollama_models.router,
    )
    for router in routers:
        app.include_router(router)
    add_body_schemas(app, [JobRequest, BatchRequest])
    # added first, so it runs last of the three: after the key check and the body limit
    app.add_middleware(FastLane, routes=fast_routes(routers), handlers=app.exception_handlers)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # added last, so it runs first: a caller without a valid key gets 401 before its body is read
    app.add_middleware(Authenticate, settings=settings)
    return app
