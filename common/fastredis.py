"""A lean asyncio Redis client for the hot path: commands multiplexed on one connection, and pub/sub.

The job path makes three script calls per job (enqueue, pop, emit) and two pub/sub deliveries, all on the
time-to-first-token path. This client writes each command as one packed buffer on a single pipelined connection
and parses replies with hiredis' public ``Reader`` (hiredis comes with ``redis[hiredis]``); it is used only where
it pays, next to a redis-py client that does everything else. Errors are redis-py's exception classes, so callers
handle both clients alike. A command is never re-sent after a connection broke under it (a script might have
run); a connection found broken before a send is replaced.

Why not redis-py's asyncio client (with hiredis): in the same runs (``bench.ab``, 200 pairs, and
``bench.abjobs``, 3000 jobs x 5 rounds, each in both orders; 2 shared cores at load 2-7) its added time to
first token p50 was 0.48 and 0.92 ms higher (0.89 and 1.31 ms POST then GET), it did 10 % and 24 % fewer jobs/s
and spent 38 % and 42 % more CPU per job (2.82 against 2.05 ms and 2.65 against 1.86 ms, API plus worker plus
Redis), past the 0.3 ms and 15 % within which it would have replaced this module.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    ReadOnlyError,
    RedisError,
    ResponseError,
)

from .replies import error_of, raise_for
from .sentinel import SENTINEL_OPTIONS, SentinelURL, is_sentinel_url, parse_sentinel_url


def pack_python(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to redis")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


# hiredis' C packer (hiredis >= 2.1, as redis[hiredis] installs): the same bytes, a third of the time (~5 us
# for an enqueue's 20 arguments against ~16 us), on both scripts of the time-to-first-token path
pack: Callable[[tuple[Any, ...]], bytes] = getattr(hiredis, "pack_command", pack_python)


def _unix_db(query: str) -> int | None:
    """The database of a ``unix://`` URL's query: ``db=N`` alone (or nothing: 0); None for any other option."""
    if not query:
        return 0
    name, _, value = query.partition("=")
    return int(value) if name == "db" and value.isdigit() and "&" not in query else None


def takes_url(url: str) -> bool:
    """Whether the lean clients take this URL: plain ``redis://host:port/db``, a unix socket
    (``unix:///path/redis.sock`` with at most ``?db=N``) or ``redis+sentinel://`` (with at most the sentinels'
    credentials as options); no TLS, no other options."""
    parts = urlsplit(url)
    if parts.scheme == "redis+sentinel":
        return _sentinel_url_ok(url) and all(
            p.partition("=")[0] in SENTINEL_OPTIONS for p in parts.query.split("&") if p
        )
    if parts.scheme == "unix":
        return bool(parts.path) and _unix_db(parts.query) is not None
    return parts.scheme == "redis" and not parts.query and bool(parts.hostname)


def _sentinel_url_ok(url: str) -> bool:
    try:
        return bool(parse_sentinel_url(url))
    except ValueError:
        return False


class Endpoint:
    """Where and how to connect, from a plain ``redis://``, ``unix://`` or ``redis+sentinel://`` URL (everything
    else stays with redis-py). Behind Sentinel, each connection asks the sentinels for the primary first."""

    def __init__(self, url: str, connect_timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        if not takes_url(url):
            raise ValueError(f"not a plain redis://host:port/db or unix:// URL: {url.split('@')[-1]!r}")
        self.path: str | None = None
        self.connect_timeout = connect_timeout
        self.sentinel: SentinelURL | None = None
        if is_sentinel_url(url):
            self.sentinel = target = parse_sentinel_url(url)
            self.host, self.port = target.sentinels[0]  # until the sentinels name the primary
            self.username, self.password, self.db = target.username, target.password, target.db
            return
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            self.path = unquote(parts.path)
            self.db = _unix_db(parts.query) or 0
        else:
            path = parts.path.strip("/")
            self.db = int(path) if path else 0

    @property
    def where(self) -> str:
        if self.sentinel is not None:
            return f"the primary {self.sentinel.master!r} (at {self.host}:{self.port})"
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    def connect(
        self, factory: Callable[[], _Protocol]
    ) -> Coroutine[Any, Any, tuple[asyncio.BaseTransport, _Protocol]]:
        """The event loop's connection coroutine for this endpoint (TCP, or a unix socket)."""
        loop = asyncio.get_running_loop()
        if self.path is not None:
            return loop.create_unix_connection(factory, self.path)
        return loop.create_connection(factory, self.host, self.port)

    async def locate(self) -> None:
        """Behind Sentinel: ask the sentinels, in turn, where the primary is now."""
        if self.sentinel is None:
            return
        errors = []
        for host, port in self.sentinel.sentinels:
            try:
                address = await _ask_sentinel(host, port, self.sentinel, self.connect_timeout)
            except (RedisError, OSError, TimeoutError) as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            if address is not None:
                self.host, self.port = address
                return
            errors.append(f"{host}:{port}: no primary named {self.sentinel.master!r}")
        raise RedisConnectionError(f"no sentinel names the primary: {'; '.join(errors)}")

    def handshake(self) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            commands.append(auth)
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


async def _ask_sentinel(host: str, port: int, target: SentinelURL, timeout: float) -> tuple[str, int] | None:
    """The primary's address one sentinel gives (None: it knows no such primary)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _transport, protocol = await loop.create_connection(lambda: _Protocol(None), host, port)
    try:
        async with asyncio.timeout(timeout):
            if target.sentinel_password is not None:
                user = (target.sentinel_username,) if target.sentinel_username else ()
                raise_for(await _send(protocol, ("AUTH", *user, target.sentinel_password)))
            reply = raise_for(await _send(protocol, ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.master)))
    finally:
        if protocol.transport is not None:
            protocol.transport.close()
    return None if not reply else (reply[0].decode(), int(reply[1]))


class _Protocol(asyncio.Protocol):
    """Replies in order to the oldest waiting future; with ``on_push``, every reply goes there instead."""

    def __init__(self, on_push: Callable[[Any], None] | None = None) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.on_push = on_push
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self.on_push is not None:
                self.on_push(reply)
            elif self.waiting:
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = RedisConnectionError(f"connection to redis lost: {exc or 'closed by the server'}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)
        self.transport = None

    @property
    def broken(self) -> bool:
        return self.transport is None or self.transport.is_closing()


def _send(protocol: _Protocol, args: tuple[Any, ...]) -> asyncio.Future[Any]:
    """Write one command; its reply will come in the future returned, in the order sent."""
    if protocol.transport is None:  # lost since it was handed out (Redis gone right after the handshake)
        raise RedisConnectionError("connection to redis lost before the command was sent")
    future = asyncio.get_running_loop().create_future()
    protocol.waiting.append(future)
    protocol.transport.write(pack(args))
    return future


async def reply_of(future: asyncio.Future[Any]) -> Any:
    """The reply to a command sent with ``FastRedis.send_now``; an error reply raises as with ``execute_command``."""
    return raise_for(await future)


async def _open(endpoint: Endpoint, on_push: Callable[[Any], None] | None) -> _Protocol:
    await endpoint.locate()
    try:
        async with asyncio.timeout(endpoint.connect_timeout):
            _transport, protocol = await endpoint.connect(lambda: _Protocol(None))
    except (OSError, TimeoutError) as exc:
        raise RedisConnectionError(f"cannot connect to redis at {endpoint.where}: {exc}") from exc
    try:
        for command in endpoint.handshake():
            raise_for(await _send(protocol, command))
        if (
            endpoint.sentinel is not None
        ):  # a sentinel may name a demoted primary for a moment after a failover
            role = raise_for(await _send(protocol, ("ROLE",)))
            if role[0] != b"master":
                raise RedisConnectionError(f"{endpoint.where} is a {role[0].decode()}, not the primary (yet)")
    except BaseException:
        if protocol.transport is not None:  # refused (AUTH, SELECT): the connection is not kept
            protocol.transport.close()
        raise
    protocol.on_push = on_push
    return protocol


class FastRedis:
    """Commands pipelined on one connection, any number of tasks at once. ``execute_command`` has redis-py's
    signature and reply types (bytes, ints, lists, None), so scripts can call either client."""

    def __init__(self, url: str) -> None:
        self.endpoint = Endpoint(url)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.broken:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is None or self._protocol.broken:
                self._protocol = await _open(self.endpoint, None)
            return self._protocol

    def send_now(self, *args: Any) -> asyncio.Future[Any] | None:
        """Write the command at once, from synchronous code, on a connection that is up; its reply (``reply_of``)
        comes in the future returned. None when there is no live connection (``execute_command`` makes one)."""
        protocol = self._protocol
        if protocol is None or protocol.broken:
            return None
        return _send(protocol, args)

    async def execute_command(self, *args: Any) -> Any:
        protocol = await self._connection()
        try:
            return await reply_of(_send(protocol, args))
        except ReadOnlyError:
            # the node was made a replica (a failover): the next command connects to the primary again
            if protocol.transport is not None:
                protocol.transport.close()
            raise

    async def execute_many(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Commands written together on one connection (``WAIT`` after a write counts that connection's
        writes); each reply, or the exception of an error reply, in order."""
        protocol = await self._connection()
        futures = [_send(protocol, args) for args in commands]
        out: list[Any] = []
        for future in futures:
            try:
                out.append(await reply_of(future))
            except RedisError as exc:
                out.append(exc)
        return out

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(protocol.lost)


class FastPubSub:
    """A subscriber connection. Every message — confirmations too — goes to ``on_message`` as redis-py's
    PubSub dict (``type``, ``channel``, ``data``); ``wait_closed`` returns when the connection is lost."""

    def __init__(self, url: str, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.endpoint = Endpoint(url)
        self.on_message = on_message
        self._protocol: _Protocol | None = None

    def _push(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) >= 3:
            kind = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if kind == "pmessage":
                self.on_message({"type": kind, "pattern": reply[1], "channel": reply[2], "data": reply[3]})
            else:
                self.on_message({"type": kind, "channel": reply[1], "data": reply[2]})

    async def connect(self) -> None:
        self._protocol = await _open(self.endpoint, self._push)

    def _write(self, *args: Any) -> None:
        protocol = self._protocol
        if protocol is None or protocol.broken or protocol.transport is None:
            raise RedisConnectionError("pub/sub connection is not open")
        protocol.transport.write(pack(args))

    async def subscribe(self, *channels: str) -> None:
        if channels:
            self._write("SUBSCRIBE", *channels)

    async def unsubscribe(self, *channels: str) -> None:
        if channels:
            self._write("UNSUBSCRIBE", *channels)

    async def wait_closed(self) -> None:
        if self._protocol is not None:
            await asyncio.shield(self._protocol.lost)

    async def aclose(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(Exception):
                protocol.transport.close()
                async with asyncio.timeout(1.0):
                    await asyncio.shield(protocol.lost)


def fast_redis(url: str) -> FastRedis | None:
    """A FastRedis for a plain ``redis://host:port/db`` or ``unix://`` URL; None for anything else (TLS, URL
    options), which stays with redis-py and its full set of connection options."""
    return FastRedis(url) if takes_url(url) else None


__all__ = [
    "FastPubSub",
    "FastRedis",
    "error_of",
    "fast_redis",
    "pack",
    "takes_url",
]
