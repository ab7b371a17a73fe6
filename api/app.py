"""The API app factory: ``create_app(settings)``; Redis, the job store and the chunk bus live in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.bus import ChunkHub
from common.connections import async_redis, sync_redis
from common.janitor import Janitor
from common.jobs import Limits
from common.registry import VERSION
from common.schemas import BatchRequest, JobRequest
from common.settings import Settings
from common.store import AsyncJobStore, JobStore

from . import errors
from .body import add_body_schemas
from .limits import BodyLimit
from .routes import fleet, jobs, metrics, ollama_api, openai_api

log = logging.getLogger("corral.api")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = async_redis(settings.redis_url, name="corral-api")
        hub = ChunkHub(async_redis(settings.redis_url, name="corral-api-bus"))
        app.state.settings = settings
        app.state.redis = client
        app.state.store = AsyncJobStore(client, Limits.from_settings(settings))
        app.state.hub = hub
        await hub.start()
        janitor_client = sync_redis(settings.redis_url, name="corral-api-janitor")
        _thread, janitor_stop = Janitor(
            JobStore(janitor_client, Limits.from_settings(settings)),
            settings.heartbeat_ttl,
            settings.janitor_interval,
        ).start()
        log.info("corral api ready; redis %s", settings.redis_url)
        try:
            yield
        finally:
            janitor_stop.set()
            janitor_client.close()
            await hub.stop()
            await hub.client.aclose()
            await client.aclose()

    app = FastAPI(
        title="Corral",
        version=VERSION,
        description="One endpoint for a fleet of Ollama hosts: per-model Redis queues, streamed results.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(fleet.router)
    app.include_router(metrics.router)
    app.include_router(ollama_api.router)
    app.include_router(openai_api.router)
    add_body_schemas(app, [JobRequest, BatchRequest])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
