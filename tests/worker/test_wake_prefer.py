"""A parked worker woken for a job of one model tries that model's queue first (``Dispatcher.woken``,
``prefer_first``): were it to take a warm job of another of its models, queued meanwhile with no other worker parked
for it, the job it was woken for would wait for the next idle poll."""

from __future__ import annotations

import asyncio

import pytest

from corral.common.settings import Settings
from corral.worker.dispatch import prefer_first
from corral.worker.lifecycle import Worker

pytestmark = pytest.mark.unit


def test_the_woken_for_model_goes_first_when_warm() -> None:
    assert prefer_first(["a", "b", "c"], "11c", "b") == (["b", "a", "c"], "11c")
    cold = prefer_first(["a", "b", "c"], "11c", "c")
    assert cold == (["a", "b", "c"], "11c")  # a cold model: warm ones first still
    switching = prefer_first(["t", "a", "b"], "t11", "b")
    assert switching == (["t", "a", "b"], "t11")  # a switch's target first
    assert prefer_first(["a", "b"], "11", "") == (["a", "b"], "11")
    assert prefer_first(["a", "b"], "11", "gone") == (["a", "b"], "11")


def test_a_wake_message_names_the_model_the_next_pop_prefers() -> None:
    async def scenario() -> None:
        w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w"))
        w.control.on_message(
            {"type": "message", "channel": b"corral:control:w", "data": b'{"wake":"j1","model":"m:latest"}'}
        )
        assert w.dispatcher.wake.is_set() and w.dispatcher.prefer == "m:latest"
        await w.backend.close()

    asyncio.run(scenario())
