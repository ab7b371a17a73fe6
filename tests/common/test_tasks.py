"""Background tasks end when cancelled, even one that swallowed a cancel (common/tasks.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from corral.common import tasks
from corral.common.tasks import cancel_and_wait

pytestmark = pytest.mark.unit


async def swallows(cancels: int, ended: list[int]) -> None:
    """A loop that drops its first ``cancels`` cancels, as a ``wait_for`` racing its result did on Python 3.11."""
    dropped = 0
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if dropped == cancels:
                ended.append(dropped)
                raise
            dropped += 1


def test_a_task_that_swallowed_cancels_is_cancelled_again_until_it_ends() -> None:
    async def scenario() -> None:
        ended: list[int] = []
        loop_tasks = [asyncio.create_task(swallows(n, ended)) for n in (0, 1, 3)]
        await asyncio.sleep(0)
        await cancel_and_wait(loop_tasks)
        assert all(task.cancelled() for task in loop_tasks)
        assert sorted(ended) == [0, 1, 3]

    asyncio.run(scenario())


def test_what_the_tasks_raised_is_not_raised_and_done_tasks_are_left_alone() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        failed = asyncio.create_task(fails())
        finished = asyncio.create_task(asyncio.sleep(0))
        await asyncio.sleep(0.01)
        await cancel_and_wait([failed, finished])
        assert isinstance(failed.exception(), RuntimeError) and finished.result() is None

    asyncio.run(scenario())


def test_a_task_that_never_ends_is_left_behind_with_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "ROUNDS", 3)
    monkeypatch.setattr(tasks, "ROUND", 0.01)

    async def scenario() -> None:
        ended: list[int] = []
        stubborn = asyncio.create_task(swallows(5, ended), name="stubborn")
        await asyncio.sleep(0)
        await cancel_and_wait([stubborn])
        assert not stubborn.done() and ended == []
        monkeypatch.setattr(tasks, "ROUNDS", 5)  # (the rest of its cancels, so that the loop closes cleanly)
        await cancel_and_wait([stubborn])
        assert stubborn.cancelled() and ended == [5]

    with caplog.at_level(logging.ERROR, logger="corral.common.tasks"):
        asyncio.run(scenario())
    assert "did not end after 3 cancels" in caplog.text and "stubborn" in caplog.text
