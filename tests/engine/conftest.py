"""Fixtures of the end-to-end suite on a real engine: llama.cpp (llama-cpp-python's server) serving tiny models made
at test time, each behind a Corral worker, with one Redis and one API. One engine per model per module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ..conftest import Fleet, own_fleet
from ..support import wait_for
from .server import Engine, tiny_engine

FAST = {"heartbeat_interval": 0.3, "heartbeat_ttl": 2.0, "janitor_interval": 0.2}


class EngineStack:
    """Engines (by worker id), a Corral worker on each, and one API in front of them."""

    def __init__(self, fleet: Fleet, tmp: Path) -> None:
        self.fleet, self.tmp = fleet, tmp
        self.engines: dict[str, Engine] = {}
        self.api = fleet.api(**FAST)
        self.http = fleet.http(self.api)

    def add_engines(self, *specs: dict[str, Any]) -> None:
        """Engines serving tiny models, started side by side, and a worker on each. A spec has ``alias`` and
        ``worker`` and may have ``seed`` (the weights), ``embedding`` and ``context``."""
        started = []
        for spec in specs:
            options = {k: spec[k] for k in ("seed", "embedding", "context") if k in spec}
            started.append((spec["worker"], tiny_engine(self.tmp, spec["alias"], **options)))
        for worker_id, engine in started:
            self.engines[worker_id] = engine.wait_ready()
        for worker_id, engine in started:
            self.fleet.worker("http://127.0.0.1:1", worker_id, backend_url=engine.url, **FAST)

    def direct(self, worker_id: str) -> httpx.Client:
        """A client of one engine's own OpenAI-compatible API (``/v1/...``)."""
        return self.fleet.http(self.engines[worker_id].base)

    def finished(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            view: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
            return view if view["status"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(done, timeout=timeout, what=f"job {job_id} to end")

    def stop(self) -> None:
        for engine in self.engines.values():
            engine.stop()


@contextlib.contextmanager
def engine_stack(tmp: Path) -> Iterator[EngineStack]:
    with own_fleet(tmp) as (_server, fleet):
        stack = EngineStack(fleet, tmp)
        try:
            yield stack
        finally:
            stack.stop()
