"""A job sent ahead of its enqueue to a parked worker (api/link.py ``hand_early``): over TCP as a dispatch line,
to a worker in the API's own process as the job itself (common/memlink.py ``hand``), which must be what the
worker would have decoded from that line."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from corral.api.link import LinkProtocol, LinkServer, Parked, pop_answer, sent_ahead
from corral.common import jsonfast, link, memlink
from corral.common.jobs import Limits, PoppedJob, PreparedJob, decode_popped, prepare_job
from corral.common.schemas import JobRequest
from corral.common.settings import Settings
from corral.worker.link import ApiLink

LIMITS = Limits.from_settings(Settings(job_timeout=321))


def prepared(**request: Any) -> PreparedJob:
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], **request}
    return prepare_job(JobRequest.model_validate(body), LIMITS, reply_to="corral:api:x", link_first=True)


def decoded(job: PreparedJob) -> PoppedJob:
    """What a worker makes of the job's dispatch line."""
    command = jsonfast.loads(link.dispatch_line(pop_answer(job)))
    return decode_popped(command["dispatch"], default_timeout=1.0)


def fields(job: PoppedJob) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(job).items() if k not in ("popped_at", "queue_wait")}


@pytest.mark.parametrize(
    "request_fields", [{}, {"timeout": 7.5}, {"options": {"temperature": 0}, "stream": False}]
)
def test_the_job_handed_in_process_is_the_one_its_line_decodes_to(request_fields: dict[str, Any]) -> None:
    job = prepared(**request_fields)
    line, item = decoded(job), sent_ahead(job)
    assert fields(item) == fields(line)
    assert item.kwargs["reply_to"] == "corral:api:x" and item.kwargs["link_first"] is True
    assert (item.attempt, item.start_seq, item.confirmed) == (1, 1, True)
    for waited in (line.queue_wait, item.queue_wait):  # (since the job's creation: here, a moment)
        assert waited is not None and 0 <= waited < 60


class Worker(ApiLink):
    """A worker's link end that records the jobs and lines it is sent."""

    def __init__(self) -> None:
        self.jobs: list[PoppedJob] = []
        self.lines: list[bytes] = []
        super().__init__(self.lines.append, self.jobs.append)


def linked_server(worker: Worker, channel: str, model: str) -> tuple[LinkServer, memlink.MemoryTransport]:
    """An API's link server with ``worker`` linked in this process, parked with two free slots, warm for
    ``model``: the server, and the API end's transport."""
    server = LinkServer(None, channel, "127.0.0.1", lambda raw: None)
    api_end = LinkProtocol(server)
    memlink.serve(channel, lambda: api_end)
    memlink.connect(channel, worker)
    server.parked["w1"] = Parked(api_end, 2, {model}, time.monotonic())
    assert isinstance(api_end.transport, memlink.MemoryTransport)
    return server, api_end.transport


def test_a_worker_in_this_process_is_handed_the_job_not_its_line() -> None:
    async def main() -> None:
        worker, job = Worker(), prepared()
        server, transport = linked_server(worker, "corral:api:here", job.model)
        try:
            assert server.hand_early(job) == "w1"
            assert worker.lines == [] and [fields(j) for j in worker.jobs] == [fields(decoded(job))]
            long = prepared(messages=[{"role": "user", "content": "long " * 120_000}])
            assert server.hand_early(long) == "w1"  # (no line to fit in: a long prompt goes ahead too)
            assert [j.id for j in worker.jobs] == [job.id, long.id] and server.handed_early == 2
            assert server.hand_early(prepared()) == ""  # (its two free slots are taken)
            transport.hand("not a job")  # (anything else handed is left alone)
            assert len(worker.jobs) == 2 and not transport.is_closing()
        finally:
            memlink.unserve("corral:api:here")
            transport.close()

    asyncio.run(main())
