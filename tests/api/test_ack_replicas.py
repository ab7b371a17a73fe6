"""CORRAL_ACK_REPLICAS: a submit is acknowledged (202) only once that many replicas hold it; else 503 with its id."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common.connections import async_redis
from corral.common.fastredis import FastRedis
from corral.common.replication import call_acked
from corral.common.scripts import POSITION
from corral.common.settings import Settings

from ..inprocess import InProcessAPI
from ..support import free_port, wait_for

pytestmark = pytest.mark.integration
JOB = {"model": "llama3", "prompt": "hi", "wait": True}  # wait: no worker needed to queue it


@pytest.fixture
def replica(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    with redis.Redis(port=redis_server.port) as primary:  # a full sync at once, not after the default 5 s
        primary.config_set("repl-diskless-sync-delay", 0)
    extra = ["--replicaof", "127.0.0.1", str(redis_server.port)]
    server = RedisServer(port=free_port(), data_dir=tmp_path / "replica", extra=extra).start()
    with redis.Redis(port=server.port) as client:
        wait_for(lambda: client.info("replication")["master_link_status"] == "up", what="the replica")
    yield server
    server.kill()


def api(url: str, replicas: int, timeout_ms: int = 100) -> InProcessAPI:
    return InProcessAPI(Settings(redis_url=url, ack_replicas=replicas, ack_timeout_ms=timeout_ms))


def test_a_submit_no_replica_holds_is_answered_503_with_its_id(redis_server: RedisServer) -> None:
    app = api(redis_server.url, 1)
    try:
        response = app.request("POST", "/jobs", json=JOB)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["code"] == "not_replicated" and body["replicas"] == 0
        assert response.headers["retry-after"] == "1"
        assert app.request("GET", f"/jobs/{body['id']}").json()["status"] == "queued"  # on the primary
        batch = app.request("POST", "/jobs/batch", json={"jobs": [JOB, JOB]})
        assert batch.status_code == 503 and len(batch.json()["ids"]) == 2
        assert app.request("POST", "/jobs", json={**JOB, "wait": False}).status_code == 404  # refusals stay
    finally:
        app.close()


def test_a_submit_a_replica_holds_is_acknowledged(redis_server: RedisServer, replica: RedisServer) -> None:
    app = api(redis_server.url, 1, timeout_ms=5000)  # (a loaded machine may take a while)
    try:
        response = app.request("POST", "/jobs", json=JOB)
        assert response.status_code == 202, response.text
        with redis.Redis(
            port=replica.port
        ) as client:  # already there: WAIT answered after the replica had it
            assert client.exists(f"rq:job:{response.json()['id']}")
    finally:
        app.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
def test_the_wait_runs_on_the_scripts_connection(
    redis_server: RedisServer, replica: RedisServer, lean: bool
) -> None:
    async def run() -> None:
        client = FastRedis(redis_server.url) if lean else async_redis(redis_server.url)
        await client.execute_command("SCRIPT", "FLUSH")  # NOSCRIPT: the script loads itself, then runs
        reply, acked = await call_acked(POSITION, [], ["nope"], client, 1, 1000)
        assert reply is None and acked == 1
        if lean:
            await client.aclose()
        else:
            await client.aclose(close_connection_pool=True)

    asyncio.run(run())
