"""Fixtures: a real redis-server per test (or per module), and factories of simulator, worker and API processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from corral.cli.embedded_redis import RedisServer

from .support import Child, base_env, free_port, port_open, wait_for

# the settings built in this process read no configuration file (a developer's ./corral.toml, say)
os.environ["CORRAL_CONFIG"] = ""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port with its own data dir (AOF on, from infra/redis.conf)."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


class Fleet:
    """Starts simulators, workers and API processes against one Redis, and stops them all at the end."""

    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.redis = redis.Redis.from_url(redis_url)
        self.clients: list[httpx.Client] = []

    def http(self, base_url: str) -> httpx.Client:
        client = httpx.Client(base_url=base_url, timeout=30)
        self.clients.append(client)
        return client

    def _child(self, name: str, argv: list[str], env: dict[str, str] | None = None, **settings: Any) -> Child:
        # a child may get its own Redis URL (another ACL user, say): `redis_url=...`
        environ = base_env(settings.pop("redis_url", self.redis_url), **settings)
        child = Child(name, argv, {**environ, **(env or {})}, self.log_dir)
        self.children.append(child)
        return child.start()

    def simulator(self, models: str = "llama3:latest", name: str = "", port: int = 0, **options: Any) -> str:
        port = port or free_port()
        argv = ["simulate", "--port", str(port), "--models", models]
        for key, value in {"ttft": 0.01, "tps": 500, "load_time": 0.05, **options}.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        child = self._child(name or f"sim-{port}", argv)
        wait_for(lambda: port_open(port) or (not child.alive() and _died(child)), what=f"simulator :{port}")
        return f"http://127.0.0.1:{port}"

    def worker(self, ollama_url: str, worker_id: str, wait_ready: bool = True, **settings: Any) -> Child:
        defaults = {"heartbeat_interval": 0.5, "heartbeat_ttl": 4.0, "model_refresh_interval": 0.5}
        child = self._child(f"worker-{worker_id}", ["worker"], ollama_url=ollama_url, worker_id=worker_id,
                            **{**defaults, **settings})  # fmt: skip
        if wait_ready:
            self.wait_worker(worker_id, child)
        return child

    def fleet_process(self, fleet_id: str, *hosts: str, **settings: Any) -> Child:
        """A ``corral fleet`` process serving the hosts registered in Redis (and ``hosts``, its ``--host`` URLs)."""
        defaults = {"heartbeat_interval": 0.5, "heartbeat_ttl": 4.0, "model_refresh_interval": 0.5}
        argv = ["fleet", *(f"--host={url}" for url in hosts)]
        return self._child(f"fleet-{fleet_id}", argv, worker_id=fleet_id, **{**defaults, **settings})

    def wait_worker(self, worker_id: str, child: Child | None = None, since: float = 0.0) -> None:
        """Until ``worker_id`` is registered and healthy (``since``: by a process started after that time, not the
        hash a killed one left, which lives until its TTL)."""

        def ready() -> bool:
            if child is not None and not child.alive():
                _died(child)
            healthy, started = self.redis.hmget(f"corral:worker:{worker_id}", "healthy", "started_at")
            return healthy == b"1" and float(started or 0) > since

        wait_for(ready, what=f"worker {worker_id} registered")

    def api(self, own_exec: bool = False, **settings: Any) -> str:
        """An API process. It starts with ``PYTHONMALLOC=malloc``, as the run it gives itself has it (``corral api``
        runs itself again under the C allocator when it trims memory; tests/cli/test_api_allocator.py checks that):
        0.65 s of CPU less per start, ~160 starts in the suite. ``own_exec``: start it as a user does."""
        return self._api([], own_exec, **settings)[0]

    def api_with_worker(self, ollama_url: str, worker_id: str, **settings: Any) -> tuple[str, Child]:
        """``corral api --worker``: an API with a worker in its process (cli/combined.py), both ready."""
        defaults = {"heartbeat_interval": 0.5, "heartbeat_ttl": 4.0, "model_refresh_interval": 0.5}
        base, child = self._api(
            ["--worker"], ollama_url=ollama_url, worker_id=worker_id, **{**defaults, **settings}
        )
        self.wait_worker(worker_id, child)
        return base, child

    def _api(self, options: list[str], own_exec: bool = False, **settings: Any) -> tuple[str, Child]:
        port = free_port()
        trims = str(settings.get("trim_memory", True)).lower() not in ("false", "0")
        env = {"PYTHONMALLOC": "malloc"} if trims and not own_exec else None
        child = self._child(f"api-{port}", ["api", "--port", str(port), *options], env, **settings)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if not child.alive():
                _died(child)
            return httpx.get(base + "/readyz", timeout=1).status_code == 200

        wait_for(ready, what="api ready")
        return base, child

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for child in reversed(self.children):
            child.stop(timeout=10)
        self.redis.close()


def _died(child: Child) -> bool:
    raise AssertionError(f"{child.name} exited early:\n{child.log()[-3000:]}")


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(redis_server.url, tmp_path)
    yield fleet
    fleet.stop()


@contextlib.contextmanager
def own_fleet(tmp: Path) -> Iterator[tuple[RedisServer, Fleet]]:
    """A redis-server of its own in ``tmp`` and a Fleet on it, for a module's fixture; both stopped at the end."""
    server = RedisServer(port=free_port(), data_dir=tmp / "redis").start()
    fleet = Fleet(server.url, tmp)
    try:
        yield server, fleet
    finally:
        fleet.stop()
        server.kill()


class Stack:
    """One Redis, one simulator, one worker and one API, shared by the tests of a module."""

    def __init__(self, fleet: Fleet, server: RedisServer, sim_url: str, api_url: str) -> None:
        self.fleet = fleet
        self.server = server
        self.sim_url = sim_url
        self.api = api_url
        self.redis = fleet.redis
        self.http = fleet.http(api_url)  # closed by fleet.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_fleet(tmp_path_factory.mktemp("stack")) as (server, fleet):
        sim = fleet.simulator("llama3:latest,qwen2.5:0.5b,nomic-embed-text:latest", tps=200)
        fleet.worker(sim, "w-stack")
        yield Stack(fleet, server, sim, fleet.api())
