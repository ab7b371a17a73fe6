"""The dashboard's snapshot: its ``time`` is no earlier than any time in it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import fakeredis
import pytest

from corral.api.apikeys import ANONYMOUS
from corral.api.routes import dashboard
from corral.common.settings import Settings

pytestmark = pytest.mark.unit


def test_the_snapshot_time_is_taken_after_the_jobs_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    async def a_job_ends_while_the_jobs_are_read(
        client: Any, limit: int, principal: Any
    ) -> list[dict[str, Any]]:
        await asyncio.sleep(0.01)  # the Redis round trip, during which the job ends
        return [{"id": "j", "status": "succeeded", "ended": time.time()}]

    monkeypatch.setattr(dashboard, "recent_jobs", a_job_ends_while_the_jobs_are_read)

    async def main() -> dict[str, Any]:
        client = fakeredis.FakeAsyncRedis()
        try:
            return await dashboard.dashboard_data(client, Settings(), ANONYMOUS, limit=30)
        finally:
            await client.aclose()

    data = asyncio.run(main())
    assert data["jobs"][0]["ended"] <= data["time"]
    assert set(data) == {"time", "workers", "queues", "stats", "jobs"}
