"""Dependencies of the routes, as ``Annotated`` aliases.

All ``async def``: FastAPI runs a plain ``def`` dependency in a thread pool, a thread hop per request."""

from __future__ import annotations

from typing import Annotated, NamedTuple

import redis.asyncio as aioredis
from fastapi import Depends, Request

from corral.common.settings import Settings
from corral.common.store import AsyncJobStore

from .apikeys import ANONYMOUS, Principal
from .bus import ChunkHub


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_store(request: Request) -> AsyncJobStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


async def get_hub(request: Request) -> ChunkHub:
    return request.app.state.hub  # type: ignore[no-any-return]


async def get_principal(request: Request) -> Principal:
    """The caller that ``api.auth.Authenticate`` let in (``ANONYMOUS`` when the API runs without keys)."""
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    return principal


class Services(NamedTuple):
    """What the lifespan set up, for handlers that take the request alone (as every fast-lane handler does)."""

    store: AsyncJobStore
    settings: Settings
    redis: aioredis.Redis
    hub: ChunkHub


def services(request: Request) -> Services:
    state = request.app.state
    return Services(state.store, state.settings, state.redis, state.hub)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[AsyncJobStore, Depends(get_store)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
HubDep = Annotated[ChunkHub, Depends(get_hub)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
