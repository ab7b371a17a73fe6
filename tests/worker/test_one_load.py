"""One load at a time per host: while this worker's engine is loading a model for a job, its pops leave the other
cold models to other hosts (an engine loads one model at a time, and the requests behind a load wait for it); once
the job's answer begins (the model is loaded), they are offered again and the pop loop is woken to try them."""

from __future__ import annotations

import asyncio

import pytest

from corral.common.jobs import PoppedJob
from corral.common.settings import Settings
from corral.worker.execute import Active
from corral.worker.lifecycle import Worker

pytestmark = pytest.mark.unit


def test_no_other_cold_model_is_taken_while_the_engine_loads_one() -> None:
    async def scenario() -> None:
        w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w"))
        w.jobs.launch = lambda job: w.jobs.active.setdefault(job.id, Active(job))  # type: ignore[method-assign]
        w.models.names = ["a:latest", "b:latest", "c:latest"]
        w.models.loaded = ["c:latest"]
        assert set(w.dispatcher.next_pop(w.models.warm())[0]) == set(w.models.names)
        active = w.jobs.start(PoppedJob(id="j1", attempt=1, model="a:latest", timeout=30, start_seq=1))
        assert active is not None
        names, flags = w.dispatcher.next_pop(w.models.warm())
        assert sorted(names) == ["a:latest", "c:latest"] and set(flags) == {"1"}  # b waits: a is loading
        w.jobs.wake.clear()
        active.accepted()  # the answer began: a is loaded
        assert w.jobs.wake.is_set()
        assert set(w.dispatcher.next_pop(w.models.warm())[0]) == set(w.models.names)
        await w.backend.close()

    asyncio.run(scenario())
