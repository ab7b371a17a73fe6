"""The heartbeat keeps its cadence while the engine is slow to list its models: beats go out every interval, not
every interval plus the engine's answer time (fifty engines behind one fleet process are as slow as the slowest)."""

from __future__ import annotations

import asyncio
import time

import pytest

from corral.common.settings import Settings
from corral.worker.lifecycle import Worker

pytestmark = pytest.mark.unit
INTERVAL = 0.1


def test_beats_keep_the_interval_while_every_model_list_read_is_slow() -> None:
    async def scenario() -> list[float]:
        w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w", heartbeat_interval=INTERVAL))
        beats: list[float] = []
        enough = asyncio.Event()

        async def slow(*_args: object) -> None:  # answers, but takes most of an interval
            await asyncio.sleep(INTERVAL * 0.8)

        async def beat() -> None:
            beats.append(time.monotonic())
            if len(beats) == 8:
                enough.set()

        w.models.refresh = slow  # type: ignore[method-assign]
        w.models.refresh_loaded = slow  # type: ignore[method-assign,assignment]
        w.heartbeat.beat = beat  # type: ignore[method-assign]
        w.models.healthy = True  # (so that every beat's read asks for the loaded models)
        task = asyncio.create_task(w.heartbeat.run())
        try:
            await asyncio.wait_for(enough.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return beats

    beats = asyncio.run(scenario())
    mean_gap = (beats[-1] - beats[0]) / (len(beats) - 1)
    assert mean_gap < INTERVAL * 1.3, (
        f"beats every {mean_gap * 1000:.0f} ms with a {INTERVAL * 1000:.0f} ms interval"
    )
