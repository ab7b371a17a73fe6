"""Redis behind Sentinel: the URL, and every kind of client following the primary through a failover."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from corral.cli.embedded_sentinel import SentinelGroup
from corral.common import keys
from corral.common.connections import async_redis, sync_redis
from corral.common.fastredis import FastRedis, takes_url
from corral.common.pubsub import RedisPyPubSub, pubsub_connection
from corral.common.scripts import POSITION
from corral.common.sentinel import SentinelURL, parse_sentinel_url, with_sentinel_password
from corral.common.settings import Settings, redacted_url

from ..support import free_port, wait_for
from .test_redis_security import self_signed, tls_capable_binary

URL = "redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/mymaster/2"


@pytest.mark.unit
def test_parse_sentinel_url() -> None:
    target = parse_sentinel_url(URL)
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381))
    assert (target.master, target.db, target.username, target.password) == ("mymaster", 2, "app", "p@ss")
    assert not target.tls and target.sentinel_password is None
    assert "p@ss" not in repr(target)
    bare = parse_sentinel_url("redis+sentinel://s1/corral?sentinel_password=x&sentinel_username=sen")
    assert bare == SentinelURL((("s1", 26379),), "corral", sentinel_username="sen", sentinel_password="x")
    tls = parse_sentinel_url("rediss+sentinel://s1:1/m?ssl_ca_certs=/ca.pem")
    assert tls.tls and tls.node_kwargs()["ssl"] and tls.sentinel_kwargs()["ssl_ca_certs"] == "/ca.pem"


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",  # no master name
        "redis+sentinel://s1:26379/m/x",  # db not a number
        "redis+sentinel:///m",  # no sentinel
        "redis+sentinel://s1:port/m",
        "redis+sentinel://s1/m?ssl_ca_certs=/ca.pem",  # TLS options without rediss+sentinel
        "redis+sentinel://s1/m?socket_timeout=1",
        "redis://s1/0",
    ],
)
def test_bad_sentinel_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)


@pytest.mark.unit
def test_sentinel_urls_are_redacted_and_carry_the_sentinel_password(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        redacted_url(URL) == "redis+sentinel://app:***@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/mymaster/2"
    )
    monkeypatch.setenv("CORRAL_REDIS_URL", URL)
    monkeypatch.setenv("CORRAL_SENTINEL_PASSWORD", "s&cret")
    settings = Settings()
    assert parse_sentinel_url(settings.redis_url).sentinel_password == "s&cret"
    assert "s&cret" not in redacted_url(settings.redis_url) and "p@ss" not in redacted_url(settings.redis_url)
    assert with_sentinel_password("redis://h/0", "x") == "redis://h/0"  # only sentinel URLs take one


@pytest.mark.unit
def test_the_lean_client_takes_plain_sentinel_urls_only() -> None:
    assert takes_url(URL) and takes_url(URL + "?sentinel_password=x")
    assert not takes_url("rediss+sentinel://s1/m")  # TLS: redis-py
    assert not takes_url("redis+sentinel://s1/m/x")


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """An ACL user on the data nodes, a password on the sentinels."""
    directory: Path = tmp_path_factory.mktemp("sentinel")
    group = SentinelGroup(directory, free_port, password="pw", username="corral", sentinel_password="spw")
    yield group.start()
    group.stop()


@pytest.mark.integration
def test_the_lean_client_leaves_a_node_that_became_a_replica(group: SentinelGroup) -> None:
    """READONLY (a primary demoted under a live connection): the connection is dropped, so the next command finds
    the primary again. (Before the failover test, which leaves no replica.)"""
    replica = next(
        n for n in group.nodes if n.port != group.primary_port() and n.process and n.process.poll() is None
    )

    async def run() -> None:
        fast = FastRedis(f"redis://corral:pw@127.0.0.1:{replica.port}/0")
        with pytest.raises(redis.ReadOnlyError):
            await fast.execute_command("SET", "k", "v")
        assert fast.send_now("PING") is None  # no live connection left
        await fast.aclose()

    asyncio.run(run())


@pytest.mark.integration
def test_every_client_follows_a_failover(group: SentinelGroup) -> None:
    """redis-py (sync, asyncio), the lean client and both subscribers reach the new primary after a kill -9 of the
    old one, with no restart: scripts load again, subscribers subscribe again."""
    url = with_sentinel_password(group.url, "spw")
    sync = sync_redis(url)
    sync.set("before", 1)

    async def run() -> None:
        client, fast = async_redis(url), FastRedis(url)
        got: dict[str, list[Any]] = {"fast": [], "redis-py": []}
        subscribers = [
            pubsub_connection(url, client, lambda m: got["fast"].append(m)),
            RedisPyPubSub(client, lambda m: got["redis-py"].append(m)),  # what TLS URLs get
        ]
        assert [type(s).__name__ for s in subscribers] == ["FastPubSub", "RedisPyPubSub"]
        for client_ in (client, fast):
            await POSITION.call_async(client_, [], ["nope"])
        old = group.kill_primary()
        group.wait_failover(old.port)

        async def works(call: Any) -> bool:
            try:
                await call()
                return True
            except (redis.ConnectionError, redis.ReadOnlyError):
                await asyncio.sleep(0.1)
                return False

        for client_ in (
            client,
            fast,
        ):  # the scripts run again (SCRIPT LOAD on the new primary when it lacks them)
            while not await works(lambda c=client_: POSITION.call_async(c, [], ["nope"])):
                pass
        assert await client.get("before") == b"1" and await fast.execute_command("GET", "before") == b"1"
        for subscriber in subscribers:  # a subscriber whose connection the failover broke connects again
            await subscriber.connect()
            await subscriber.subscribe("corral:test")
        await asyncio.sleep(0.2)
        await client.publish("corral:test", "after")
        for name in got:
            await asyncio.wait_for(_until(lambda n=name: any(m["type"] == "message" for m in got[n])), 5)
        for subscriber in subscribers:
            await subscriber.aclose()
        await fast.aclose()
        await client.aclose()

    asyncio.run(run())
    wait_for(lambda: sync.set("after", 1), what="the sync client to reach the new primary")
    assert sync.get(keys.job_key("missing")) is None
    sync.close()


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


@pytest.mark.integration
def test_sentinel_over_tls_with_an_acl_user(tmp_path: Path) -> None:
    """rediss+sentinel://: TLS to the sentinels and to the nodes, for redis-py and for the subscribers."""
    tls_capable_binary()
    certs = self_signed(tmp_path / "certs")
    group = SentinelGroup(
        tmp_path / "group", free_port, replicas=1, password="pw", username="corral", tls=certs
    )
    group.start()
    try:
        assert group.url.startswith("rediss+sentinel://") and not takes_url(group.url)
        with sync_redis(group.url) as sync:
            sync.set("k", "tls")

        async def run() -> None:
            client = async_redis(group.url)
            got: list[Any] = []
            subscriber = pubsub_connection(group.url, client, got.append)
            await subscriber.connect()
            await subscriber.subscribe("c")
            await _until(lambda: any(m["type"] == "subscribe" for m in got))
            await client.publish("c", await client.get("k"))
            await asyncio.wait_for(_until(lambda: any(m["data"] == b"tls" for m in got)), 5)
            await subscriber.aclose()
            await client.aclose(close_connection_pool=True)

        asyncio.run(run())
    finally:
        group.stop()
