"""Redis behind Sentinel: ``redis+sentinel://`` URLs, and redis-py clients that follow the primary.

``redis+sentinel://[[user]:password@]host:port[,host:port…]/<master-name>[/<db>]`` names the sentinels, not a data
node: every connection asks them where the primary is, and a connection that breaks (a failover kills the old
primary's clients) asks again. The user and password are the data nodes'; the sentinels' own password, when they
have one, is ``sentinel_password`` in the query (``CORRAL_SENTINEL_PASSWORD`` puts it there), with
``sentinel_username`` beside it for a sentinel ACL user. ``rediss+sentinel://`` speaks TLS to the sentinels and the
data nodes alike; ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_cert_reqs`` in the query are
redis-py's options of the same names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import Sentinel

SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
DEFAULT_SENTINEL_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False
    ssl: tuple[tuple[str, str], ...] = ()

    def node_kwargs(self) -> dict[str, Any]:
        """redis-py connection options of the data nodes (primary and replicas)."""
        options: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        return {**options, **self.tls_kwargs()}

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py connection options of the sentinels."""
        options = {"username": self.sentinel_username, "password": self.sentinel_password}
        return {**{k: v for k, v in options.items() if v is not None}, **self.tls_kwargs()}

    def tls_kwargs(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        return {"ssl": True, **dict(self.ssl)}


def parse_sentinel_url(url: str) -> SentinelURL:
    """A ``redis+sentinel://`` URL's parts; ``ValueError`` names what is wrong (never the password)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"not a sentinel URL (redis+sentinel:// or rediss+sentinel://): {parts.scheme}://")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(item) for item in hostlist.split(",") if item.strip())
    if not sentinels:
        raise ValueError("a sentinel URL names at least one sentinel host:port")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a sentinel URL's path is /<master-name> or /<master-name>/<db>")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError("the database in a sentinel URL's path is a number")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(query) - {*SENTINEL_OPTIONS, *TLS_OPTIONS}
    if unknown:
        raise ValueError(f"unknown sentinel URL option(s): {', '.join(sorted(unknown))}")
    tls = parts.scheme.lower() == "rediss+sentinel"
    if not tls and set(query) & set(TLS_OPTIONS):
        raise ValueError("ssl_* options need rediss+sentinel://")
    return SentinelURL(
        sentinels=sentinels,
        master=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=username,
        password=password,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
        tls=tls,
        ssl=tuple((k, v) for k, v in query.items() if k in TLS_OPTIONS),
    )


def _host_port(item: str) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        return item.strip(), DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not host:
        raise ValueError(f"a sentinel address is host:port, not {item.strip()!r}")
    return host.strip("[]"), int(port)


def with_sentinel_password(url: str, password: str) -> str:
    """``url`` with ``sentinel_password`` in its query (a sentinel URL that has none yet); any other URL as it is."""
    if not password or not is_sentinel_url(url) or "sentinel_password=" in urlsplit(url).query:
        return url
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}sentinel_password={quote(password, safe='')}"


def sync_master(url: str, options: dict[str, Any]) -> redis.Redis:
    """A sync client of the primary the sentinels name; ``options``: connection options (timeouts, retry)."""
    target = parse_sentinel_url(url)
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={**target.sentinel_kwargs(), "socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        **target.node_kwargs(),
    )
    return sentinel.master_for(target.master, redis_class=redis.Redis, **options)


class BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):  # type: ignore[misc]
    """Sentinel's pool that, like the other URLs' pool, makes a burst wait for a free connection at the cap, and
    that closes its connections to the sentinels with the client."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing (a failover disconnects only the idle ones)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def async_master(url: str, options: dict[str, Any], max_connections: int) -> aioredis.Redis:
    """An asyncio client of the primary the sentinels name (a blocking pool of ``max_connections``)."""
    target = parse_sentinel_url(url)
    sentinel = AsyncSentinel(
        list(target.sentinels),
        sentinel_kwargs={**target.sentinel_kwargs(), "socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        **target.node_kwargs(),
    )
    client: aioredis.Redis = sentinel.master_for(
        target.master,
        redis_class=aioredis.Redis,
        connection_pool_class=BlockingSentinelPool,
        max_connections=max_connections,
        timeout=10,
        **options,
    )
    return client


__all__ = [
    "SentinelURL",
    "async_master",
    "is_sentinel_url",
    "parse_sentinel_url",
    "sync_master",
    "with_sentinel_password",
]
