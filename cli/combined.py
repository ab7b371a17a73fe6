"""``corral api --worker``: the API and a worker for the engine on its host, in one process.

On the host where clients connect and an engine runs, the worker has no reason to be a process of its own: run in
the API's event loop, its direct link to the API is an in-memory pair (``common/memlink.py``), so a job sent ahead
reaches it, and each chunk the API, without the two process wake-ups of a link over TCP. Everything else is as
with two processes: the worker registers, beats, parks and takes jobs through Redis like any other, and serves the
other APIs' jobs too; workers on other hosts serve this API's jobs.

Signals: the first SIGTERM or SIGINT stops the API taking connections (uvicorn's graceful shutdown waits for the
open ones, streams included) and drains the worker (no new job; the running ones finish); the process exits once
both are done. A second signal exits at once, as it does for ``corral worker`` (its jobs are re-queued).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

import uvicorn

from corral.common.settings import Settings
from corral.worker import Worker

log = logging.getLogger("corral.api")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
STARTUP_FAILURE = 3


class ServerWithWorker(uvicorn.Server):
    """uvicorn's server, whose exit signal also drains the worker run beside it."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self.worker: Worker | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.loop is not None and self.worker is not None:
            self.loop.call_soon_threadsafe(self.worker.drain)

    async def serve_both(self) -> None:
        """Run the API and the worker until both have stopped (the worker's failure stops the API too)."""
        self.loop = asyncio.get_running_loop()
        self.worker = worker = Worker(self.settings)
        task = asyncio.create_task(worker.run(), name="worker")
        task.add_done_callback(self._worker_ended)
        # uvicorn restores the handlers it found, and raises again the signals it caught, once it has shut down:
        # these ignore them, and the worker's own handler takes over for the rest of its drain
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        await self.serve()
        for sig in SIGNALS:
            self.loop.add_signal_handler(sig, worker.drain)
        if not self.started:  # (the API could not start: the worker is not left serving alone)
            worker.stop_taking()
        await task

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the worker in this process failed; stopping the API", exc_info=task.exception())
            self.should_exit = True


def run(app: Any, config: dict[str, Any], settings: Settings) -> None:
    """Serve ``app`` with ``config`` (``uvicorn.run``'s keyword arguments) and run a worker of ``settings`` beside it,
    on the event loop uvicorn would run (uvloop when installed)."""
    server = ServerWithWorker(uvicorn.Config(app, **config), settings)
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(server.serve_both())
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)  # (as uvicorn.run exits when its server did not start)
