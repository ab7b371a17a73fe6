"""An open-loop submit load: ``POST /jobs`` at a set rate from many keep-alive connections, in a thread of its own.

Threads of httpx clients, each waiting for its answer, made 69-250 submits/s on 2 shared cores (the client's own
CPU and the GIL, not the API, were the limit); this is one asyncio loop of ``RawClient`` connections, each taking
the next slot of a fixed schedule (``rate`` per second), so a slow answer delays only its own connection and the
rate holds while the API keeps up. What a submit got is counted: 202 (the job id kept), another status, or a
broken connection (reopened).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .rawhttp import RawClient


@dataclass
class SubmitLoad:
    api: str
    rate: float  # submits per second, the schedule
    connections: int = 48  # at most this many submits in flight
    body: Callable[[int], dict[str, Any]] = lambda n: {"model": "llama3", "prompt": f"k{n} w w w"}
    ids: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # "202", "503", "ConnectionResetError", ...
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    elapsed: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="submit-load", daemon=True
        )

    def start(self) -> SubmitLoad:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> SubmitLoad:
        self._stop.set()
        self.elapsed = time.monotonic() - self.started
        self._thread.join(30)
        return self

    @property
    def achieved(self) -> float:
        """Acknowledged (202) submits per second."""
        return len(self.ids) / self.elapsed if self.elapsed else 0.0

    @property
    def offered(self) -> float:
        """Submits answered (any answer) or failed per second: the rate the API was asked for."""
        return sum(self.outcomes.values()) / self.elapsed if self.elapsed else 0.0

    async def _run(self) -> None:
        slots = iter(range(10**9))
        await asyncio.gather(*(self._connection(slots) for _ in range(self.connections)))

    async def _connection(self, slots: Any) -> None:
        client: RawClient | None = None
        while not self._stop.is_set():
            n = next(slots)
            delay = self.started + n / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule: open loop, not "as fast as answers come"
                if self._stop.is_set():
                    break
            try:
                client = client or await RawClient(self.api).connect()
                sent = time.monotonic()
                status, payload = await asyncio.wait_for(client.request("POST", "/jobs", self.body(n)), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as exc:
                self.outcomes[type(exc).__name__] += 1
                if client is not None:
                    await _close(client)
                client = None
                continue
            self.outcomes[str(status)] += 1
            if status == 202:
                self.latencies.append(time.monotonic() - sent)
                self.ids.append(orjson.loads(payload)["id"])
        if client is not None:
            await _close(client)


async def _close(client: RawClient) -> None:
    with contextlib.suppress(OSError):
        await client.close()
