"""The dashboard's snapshot: its ``time`` is no earlier than any time in it, and its parts are read at one
instant (a job submitted between the listing of ids and the read is in the table as in the counts)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import fakeredis
import pytest

from corral.api.apikeys import ANONYMOUS
from corral.api.routes import dashboard
from corral.common import keys
from corral.common.settings import Settings

pytestmark = pytest.mark.unit
QUEUE = keys.RQ_QUEUE_PREFIX + keys.QUEUE_NAME_PREFIX + "llama3:latest"


def test_the_snapshot_time_is_taken_after_the_jobs_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    async def a_job_ends_while_the_jobs_are_read(client: Any, *args: Any) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # the Redis round trip, during which the job ends
        ended = [{"id": "j", "status": "succeeded", "ended": time.time()}]
        return {"workers": [], "queues": {}, "running": {}, "stats": {}, "jobs": ended}

    monkeypatch.setattr(dashboard, "read_snapshot", a_job_ends_while_the_jobs_are_read)

    async def main() -> dict[str, Any]:
        client = fakeredis.FakeAsyncRedis()
        try:
            return await dashboard.dashboard_data(client, Settings(), ANONYMOUS, limit=30)
        finally:
            await client.aclose()

    data = asyncio.run(main())
    assert data["jobs"][0]["ended"] <= data["time"]
    assert set(data) == {"time", "workers", "queues", "running", "stats", "jobs"}


class SubmitsOnce(fakeredis.FakeAsyncRedis):
    """A Redis where a job is submitted (and one starts) just before the snapshot's MULTI, as a busy fleet does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[str] = []

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        if transaction or self.submitted:
            return pipe
        listing = pipe.execute

        async def list_then_submit(*args: Any, **kwargs: Any) -> Any:
            found = await listing(*args, **kwargs)
            self.submitted.append("job2")
            await self.submit("job2")
            return found

        pipe.execute = list_then_submit
        return pipe

    async def submit(self, job_id: str) -> None:
        async with super().pipeline(transaction=True) as pipe:
            pipe.hset(keys.job_key(job_id), mapping={"status": "queued", "model": "llama3:latest"})
            pipe.lpush(QUEUE, job_id).lpush(keys.RECENT_JOBS, job_id).hincrby(keys.STATS, "submitted", 1)
            pipe.hset(keys.job_key("job1"), "status", "started").hincrby(keys.RUNNING, "llama3:latest", 1)
            pipe.lrem(QUEUE, 0, "job1")
            await pipe.execute()


def test_a_job_submitted_between_the_two_round_trips_is_in_the_table_and_the_counts() -> None:
    async def main() -> dict[str, Any]:
        client = SubmitsOnce()
        try:
            await client.hset(keys.job_key("job1"), mapping={"status": "queued", "model": "llama3:latest"})
            await client.lpush(QUEUE, "job1")
            await client.lpush(keys.RECENT_JOBS, "job1")
            await client.sadd(keys.RQ_QUEUES, QUEUE)
            await client.hset(keys.STATS, "submitted", 1)
            return await dashboard.read_snapshot(client, 30, ANONYMOUS, 10.0)
        finally:
            await client.aclose()

    data = asyncio.run(main())
    statuses = {job["id"]: job["status"] for job in data["jobs"]}
    assert statuses == {"job1": "running", "job2": "queued"}
    assert data["queues"] == {"llama3:latest": 1} and data["running"] == {"llama3:latest": 1}
    assert data["stats"] == {"submitted": 2}
