"""The lean Redis client against a real redis-server: replies, errors, pipelining, reconnects, pub/sub."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from corral.cli.embedded_redis import RedisServer
from corral.common import fastredis
from corral.common.fastredis import (
    Endpoint,
    FastPubSub,
    FastRedis,
    fast_redis,
    pack,
    pack_python,
)
from corral.common.pubsub import RedisPyPubSub, pubsub_connection
from corral.common.replies import ERR_CLASSES, ERROR_CLASSES

from ..support import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("packer", [pack, pack_python], ids=["used", "python"])
def test_pack_is_resp(packer: Callable[[tuple[Any, ...]], bytes]) -> None:
    assert packer(("SET", b"k", 7, 1.5, "é")) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n7\r\n$3\r\n1.5\r\n$2\r\n\xc3\xa9\r\n"
    )
    with pytest.raises(TypeError):
        packer(("SET", None))


def test_the_c_packer_is_used_and_agrees() -> None:
    assert pack is not pack_python  # hiredis >= 2.1 (redis[hiredis]) has one
    args = (
        "EVALSHA",
        "a" * 40,
        1,
        "rq:queue:ollama:m",
        0,
        1795521206.7937455,
        '{"a":"\\u00e9"}',
        b"\x00\xff",
    )
    assert pack(args) == pack_python(args)


def test_only_plain_urls_take_the_fast_path() -> None:
    for url in ("redis://127.0.0.1:6390/0", "unix:///tmp/r.sock", "unix:///tmp/r.sock?db=2"):
        assert isinstance(fast_redis(url), FastRedis)
        assert isinstance(pubsub_connection(url, object(), print), FastPubSub)
    for url in (
        "rediss://h:6379/0",
        "redis://h:6379/0?ssl_cert_reqs=none",
        "unix:///tmp/r.sock?password=x",
        "unix:///tmp/r.sock?db=1&socket_timeout=3",
        "unix://",
    ):
        assert fast_redis(url) is None
        assert isinstance(pubsub_connection(url, object(), print), RedisPyPubSub)
    endpoint = Endpoint("unix://me:secret@/run/r%20x.sock?db=4")
    assert (endpoint.path, endpoint.db, endpoint.username, endpoint.password) == (
        "/run/r x.sock",
        4,
        "me",
        "secret",
    )


def test_commands_and_pubsub_over_a_unix_socket(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis", unix_socket=True).start()
    assert server.unix_url is not None and server.socket is not None and server.socket.is_socket()

    async def main() -> None:
        client = FastRedis(server.unix_url.replace("db=0", "db=5"))
        got: list[dict[str, Any]] = []
        confirmed, arrived = asyncio.Event(), asyncio.Event()

        def on_message(message: dict[str, Any]) -> None:
            got.append(message)
            (confirmed if message["type"] == "subscribe" else arrived).set()

        assert server.unix_url is not None
        sub = FastPubSub(server.unix_url, on_message)
        await sub.connect()
        await sub.subscribe("ch")
        assert await client.execute_command("SET", "k", "v") == b"OK"
        info = await client.execute_command("CLIENT", "INFO")
        assert b"flags=U" in info and b"db=5" in info  # a unix socket client, on the URL's database
        await asyncio.wait_for(confirmed.wait(), 5)
        assert await client.execute_command("PUBLISH", "ch", "hi") == 1
        await asyncio.wait_for(arrived.wait(), 5)
        assert got[-1]["data"] == b"hi"
        await sub.aclose()
        await client.aclose()

    try:
        asyncio.run(main())
        tcp = redis.Redis(host=server.host, port=server.port, db=5)
        assert tcp.get("k") == b"v"
        tcp.close()
    finally:
        server.kill()


def test_a_socket_path_over_the_kernels_limit_means_no_socket(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path / ("d" * 120), unix_socket=True)
    assert server.socket is None and server.unix_url is None
    assert "--unixsocket" not in server.command()


def test_replies_errors_and_many_commands_at_once(redis_server: RedisServer, r: redis.Redis) -> None:
    async def main() -> None:
        client = FastRedis(redis_server.url.rsplit("/", 1)[0] + "/3")
        assert await client.execute_command("SET", "k", "v") == b"OK"
        assert await client.execute_command("GET", "k") == b"v"
        assert await client.execute_command("GET", "missing") is None
        assert await client.execute_command("RPUSH", "l", 1, 2) == 2
        assert await client.execute_command("LRANGE", "l", 0, -1) == [b"1", b"2"]
        with pytest.raises(NoScriptError):
            await client.execute_command("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError, match="wrong number"):
            await client.execute_command("GET")
        replies = await asyncio.gather(*(client.execute_command("INCR", "n") for _ in range(500)))
        assert sorted(replies) == list(range(1, 501))
        await client.aclose()

    asyncio.run(main())
    assert r.execute_command("SELECT", 3) and r.get("k") == b"v"  # the URL's db was selected


def test_reconnects_after_a_redis_restart(redis_server: RedisServer) -> None:
    async def main() -> None:
        client = FastRedis(redis_server.url)
        assert await client.execute_command("PING") == b"PONG"
        redis_server.kill()
        with pytest.raises(RedisConnectionError):
            await client.execute_command("PING")
        redis_server.start()
        assert await client.execute_command("PING") == b"PONG"
        await client.aclose()

    asyncio.run(main())


def test_a_connection_lost_before_the_command_is_written_is_a_redis_connection_error(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis killed between the connection's handshake and the command (seen under kill -9 at 300 submits/s): a
    ConnectionError, which the API answers 503, not an AssertionError (a 500)."""

    async def main() -> None:
        client = FastRedis(redis_server.url)
        assert await client.execute_command("PING") == b"PONG"
        protocol = await client._connection()  # the connection the next command gets
        assert protocol.transport is not None
        protocol.transport.close()
        await protocol.lost  # connection_lost has run: the protocol has no transport

        async def same() -> Any:
            return protocol

        monkeypatch.setattr(client, "_connection", same)
        with pytest.raises(RedisConnectionError):
            await client.execute_command("PING")
        assert not protocol.waiting  # no reply left awaited
        await client.aclose()

    asyncio.run(main())


def test_a_refused_connection_is_a_redis_connection_error(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(RedisConnectionError):
            await FastRedis(f"redis://127.0.0.1:{free_port()}/0").execute_command("PING")

    asyncio.run(main())


def test_pubsub_delivers_and_reports_a_lost_connection(redis_server: RedisServer, r: redis.Redis) -> None:
    async def main() -> None:
        got: list[dict[str, Any]] = []
        confirmed = asyncio.Event()
        arrived = asyncio.Event()

        def on_message(message: dict[str, Any]) -> None:
            got.append(message)
            (confirmed if message["type"] == "subscribe" else arrived).set()

        sub = FastPubSub(redis_server.url, on_message)
        await sub.connect()
        await sub.subscribe("ch")
        await asyncio.wait_for(confirmed.wait(), 5)
        assert await asyncio.to_thread(r.publish, "ch", b"hello") == 1
        await asyncio.wait_for(arrived.wait(), 5)
        assert got[-1] == {"type": "message", "channel": b"ch", "data": b"hello"}
        redis_server.kill()
        await asyncio.wait_for(sub.wait_closed(), 5)
        with pytest.raises(RedisConnectionError):
            await sub.subscribe("other")
        await sub.aclose()

    asyncio.run(main())


def test_no_private_module_of_a_library_is_imported() -> None:
    tree = ast.parse((ROOT / "common" / "fastredis.py").read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    private = [m for m in imported if m != "__future__" and any(p.startswith("_") for p in m.split("."))]
    assert "hiredis" in imported and not private
    assert fastredis.__file__ == str(ROOT / "common" / "fastredis.py")


def test_error_replies_raise_what_redis_py_raises(redis_server: RedisServer, r: redis.Redis) -> None:
    """Every error code of the table (a script returns it as Redis would), and replies of real commands: the
    lean client raises the class and message redis-py's asyncio client raises."""
    r.set("s", "v")
    failing: list[tuple[Any, ...]] = [
        ("EVALSHA", "0" * 40, 0),  # NOSCRIPT
        ("GET",),  # ERR wrong number of arguments
        ("LPUSH", "s", 1),  # WRONGTYPE: no class of its own
        *(("EVAL", "return {err=ARGV[1]}", 0, f"{code} from a script") for code in ERROR_CLASSES),
        *(("EVAL", "return {err=ARGV[1]}", 0, f"ERR {text}") for text in ERR_CLASSES),
        ("EVAL", "return {err=ARGV[1]}", 0, "BUSY not one of redis-py's"),
    ]

    async def main() -> None:
        fast = FastRedis(redis_server.url)
        reference = aioredis.Redis.from_url(redis_server.url)
        for command in failing:
            with pytest.raises(Exception) as theirs:
                await reference.execute_command(*command)
            with pytest.raises(Exception) as ours:
                await fast.execute_command(*command)
            assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value)), command
        await fast.aclose()
        await reference.aclose()

    asyncio.run(main())


def test_acl_user_and_password_from_the_url(redis_server: RedisServer, r: redis.Redis) -> None:
    r.execute_command("ACL", "SETUSER", "corral-t", "on", ">pw-1", "~corral:*", "+get", "+set", "+client")
    base = redis_server.url.split("//", 1)[1]

    async def main() -> None:
        client = FastRedis(f"redis://corral-t:pw-1@{base}")
        assert await client.execute_command("SET", "corral:x", "1") == b"OK"
        assert b"user=corral-t" in await client.execute_command("CLIENT", "INFO")
        with pytest.raises(NoPermissionError):
            await client.execute_command("SET", "other:x", "1")
        with pytest.raises(NoPermissionError):
            await client.execute_command("DEL", "corral:x")
        await client.aclose()
        before = len(r.client_list())
        with pytest.raises(AuthenticationError):
            await FastRedis(f"redis://corral-t:wrong@{base}").execute_command("PING")
        with pytest.raises(AuthenticationError):
            await FastPubSub(f"redis://corral-t:wrong@{base}", print).connect()
        # a refused connection is not kept open
        await asyncio.to_thread(wait_for, lambda: len(r.client_list()) == before, 5, "refused ones closed")

    asyncio.run(main())
