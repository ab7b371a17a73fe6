"""Authentication, scopes and the per-key request rate, as one ASGI middleware in front of every route.

Being a middleware (not a per-route dependency), it covers every route added later, mounted apps and unknown
paths included; the scope a request needs comes from its method and path (``common.auth.required_scope``).
The caller ends up in ``request.state.principal`` (see ``api.deps.PrincipalDep``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.common import keys
from corral.common.connections import TRANSIENT
from corral.common.errors import CorralError, Forbidden, RateLimited, Unauthorized
from corral.common.settings import Settings

from .apikeys import (
    ANONYMOUS,
    RATE,
    Principal,
    credential,
    hash_key,
    parse_api_keys,
    rate_arguments,
    required_scope,
    retry_after,
)
from .apikeys import Scope as KeyScope
from .errors import shaped_error

log = logging.getLogger("corral.api")
REQUIRED_CACHE_SECONDS = 1.0


class Authenticate:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.env_keys = parse_api_keys(settings.api_keys.get_secret_value())
        self._required = bool(self.env_keys)
        self._checked_at = -math.inf
        # the read of the flag under way: True once it succeeded
        self._reading: asyncio.Future[bool] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["method"], scope["path"])
        if needed is not None:
            try:
                principal = await self.admit(scope, needed)
            except CorralError as exc:
                await refusal(scope, exc)(scope, receive, send)
                return
            except TRANSIENT as exc:
                message = f"redis unavailable: {exc}"
                await shaped_error(scope["path"], 503, message, "redis_unavailable")(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
        if needed is not None and self.stale(REQUIRED_CACHE_SECONDS / 2):
            # read again once the response is out, by the request's own task: nothing of it on a request's path
            await self._refresh_required(scope["app"].state.redis)

    async def admit(self, scope: Scope, needed: KeyScope) -> Principal:
        client = scope["app"].state.redis
        principal = await self.principal(client, credential(Headers(scope=scope)))
        if not principal.can(needed):
            raise Forbidden(
                f"this API key has scope '{principal.scope.word}'; {scope['method']} {scope['path'][:200]} "
                f"needs '{needed.word}'"
            )
        limit = rate_arguments(principal, self.settings.rate_limit, self.settings.rate_burst)
        if limit is not None:
            wait = retry_after(await RATE.call_async(client, *limit))
            if wait is not None:
                raise RateLimited("request rate limit of this API key reached; retry later", wait)
        return principal

    async def principal(self, client: Any, key: str | None) -> Principal:
        """The caller. Without keys configured anyone is ``ANONYMOUS`` (whatever they send: OpenAI's clients
        always send a key); with keys a missing or unknown key is refused."""
        found = None
        if key is not None:
            digest = hash_key(key)
            found = self.env_keys.get(digest)
            if found is None:
                raw = await client.hget(keys.API_KEYS, digest)
                found = Principal.from_record(raw) if raw else None
        if found is not None:
            return found
        if not await self.required(client):
            return ANONYMOUS
        if key is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        raise Unauthorized("invalid API key")

    async def required(self, client: Any) -> bool:
        """Keys are required when CORRAL_API_KEYS is set or once a key was created in Redis. That flag is read at
        most a second before the request: a request that found it over half a second old reads it again after
        its response (``__call__``: the requests after it get the answer), and one that finds it over a second
        old reads it itself. It never turns off by itself, so revoking every key locks the API rather than
        opening it."""
        if self._required:
            return True
        if self.stale(REQUIRED_CACHE_SECONDS):
            await self._check_required(client)
        return self._required

    def stale(self, age: float) -> bool:
        """Whether keys are not known to be required and the flag was read over ``age`` seconds ago."""
        return not self._required and time.monotonic() - self._checked_at > age

    async def _check_required(self, client: Any) -> None:
        """One read at a time: the requests that find the flag stale while it is read wait for that read (a burst
        of thousands would otherwise send thousands of EXISTS, each on a connection of the Redis pool, growing it
        to its cap). A read that failed or whose request left: each waiting request reads it itself."""
        reading = self._reading
        if reading is not None:
            if not await asyncio.shield(reading):
                await self._read_required(client)
            return
        self._reading = reading = asyncio.get_running_loop().create_future()
        read = False
        try:
            await self._read_required(client)
            read = True
        finally:
            reading.set_result(read)
            self._reading = None

    async def _read_required(self, client: Any) -> None:
        checked_at = time.monotonic()
        self._required = self._required or bool(await client.exists(keys.AUTH_REQUIRED))
        self._checked_at = checked_at

    async def _refresh_required(self, client: Any) -> None:
        try:
            await self._check_required(client)
        except Exception as exc:  # Redis away: a later request reads it itself (and fails as it must)
            log.debug("auth flag not read: %s", exc)


def refusal(scope: Scope, exc: CorralError) -> Any:
    status = {Unauthorized: 401, Forbidden: 403, RateLimited: 429}.get(type(exc), 400)
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return shaped_error(scope["path"], status, exc.message, exc.code, headers)
