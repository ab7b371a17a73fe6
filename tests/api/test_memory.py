"""The trim after a burst of streams: once most of a burst has left, once per burst, never for a few streams."""

from __future__ import annotations

import asyncio
import gc
import platform
import sys

import pytest

from corral.api import memory
from corral.api.memory import StreamGauge, malloc_trim, release_free_lists, release_memory_of

pytestmark = pytest.mark.unit


def test_malloc_trim_is_found_on_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        assert malloc_trim() is None or callable(malloc_trim())
        return
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was given back


def test_the_api_runs_again_under_the_c_allocator_unless_pythonmalloc_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(memory.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    memory.exec_under_c_allocator(["api", "--port", "8001"])
    assert calls == [
        (sys.executable, [sys.executable, "-m", "corral", "api", "--port", "8001"], {**calls[0][2]})
    ]
    assert calls[0][2]["PYTHONMALLOC"] == "malloc"
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")  # the user's choice (or the run that exec started) stays
    memory.exec_under_c_allocator(["api"])
    assert len(calls) == 1


def test_a_burst_is_trimmed_once_most_of_it_has_left() -> None:
    async def scenario() -> list[int]:
        trims: list[int] = []
        gauge = StreamGauge(lambda: trims.append(gauge.open), min_released=200, delay=0)
        for _ in range(400):
            gauge.opened()
        for _ in range(250):  # 150 still open: more than a quarter of the peak
            gauge.closed()
        assert not gauge.releasing
        for _ in range(60):  # 90 open: under a quarter
            gauge.closed()
        assert gauge.releasing
        for _ in range(10):  # while the trim is pending: no second one
            gauge.closed()
        async with asyncio.timeout(5):
            await gauge.settled()
        assert gauge.peak == gauge.open == 80  # the next burst is measured from here
        for _ in range(100):  # a little churn is no burst
            gauge.opened()
            gauge.closed()
        assert not gauge.releasing
        await gauge.aclose()
        return trims

    assert asyncio.run(scenario()) == [80]


def test_counting_only_without_a_trim() -> None:
    async def scenario() -> StreamGauge:
        gauge = StreamGauge(None, min_released=1, delay=0)
        gauge.opened()
        gauge.closed()
        await gauge.aclose()
        return gauge

    assert repr(asyncio.run(scenario())) == "StreamGauge(open=0, peak=1, trims=0)"


def test_the_release_empties_the_free_lists() -> None:
    """The tuples freed last stay allocated in the interpreter's free list (up to 2,000 of each length), pinning
    the arenas they are in, until it is emptied."""
    pairs = [(i, -i) for i in range(10_000)]
    del pairs
    held = sys.getallocatedblocks()
    release_free_lists()
    assert sys.getallocatedblocks() <= held - 1_500
    assert gc.get_freeze_count() == 0  # nothing left frozen


def test_the_release_then_trims() -> None:
    calls: list[str] = []
    release_memory_of(lambda: calls.append("trim"))()
    release_memory_of(None)()  # no C library trim: the free lists only
    assert calls == ["trim"]


def test_the_release_waits_for_the_burst_to_stop_closing() -> None:
    """The streams still closing after most have gone would otherwise refill the free lists after the release."""

    async def scenario() -> list[int]:
        released: list[int] = []
        gauge = StreamGauge(lambda: released.append(gauge.open), min_released=200, delay=0.05)
        for _ in range(400):
            gauge.opened()
        for _ in range(300):  # a quarter left: the release is due
            gauge.closed()
        for _ in range(4):  # the rest keep closing, a few each delay
            await asyncio.sleep(0.03)
            for _ in range(20):
                gauge.closed()
        async with asyncio.timeout(5):
            await gauge.settled()
        await gauge.aclose()
        return released

    assert asyncio.run(scenario()) == [20]
