"""Giving memory back once a burst of streams has ended.

After 3,000 readers had gone, Python's live blocks were back to what they were before, yet the API's RSS stayed
~70 MB over idle: 67 of the 1 MiB arenas of Python's allocator (obmalloc) that the burst had added stayed
allocated, each pinned by a few blocks (``sys._debugmallocstats``: 33 arenas idle, 101 after, 3,790 pools in them
empty). An arena goes back to the system only when every pool in it is empty. What pinned them:

- the interpreter's free lists: up to 2,000 freed tuples of each length 1-19 (and some floats, lists, dicts,
  contexts) kept for reuse, the last ones freed by the burst: ~10,000 blocks spread over the new arenas. CPython
  empties them only in a collection of the oldest generation (``release_free_lists``): 101 arenas -> 73;
- Redis pool connections opened mid-burst (each reader's owner check and the keys flag read on connections of
  the pool, which grew to its cap of 64): the owner check now goes through the lean client and concurrent reads
  of the flag share one (api/auth.py);
- a thread pool made for the trim after the burst: the trim now runs on the loop (~1-3 ms, once per burst).

glibc's ``malloc_trim(0)`` then gives back the free pages of its heaps (the burst's larger buffers, the sets and
dicts of tables over 512 bytes). Both run once, a second after most of a burst has left, never on a request's path.
That still left ~40 arenas pinned by long-lived blocks re-allocated during the burst (RSS 109 MB after 3,000
readers, idle 70), which CPython cannot move; so ``corral api`` runs itself again under ``PYTHONMALLOC=malloc``
(``exec_under_c_allocator``): in glibc's heap the trim gives back every free page whatever pins its neighbours
(75 MB after, idle 72; API CPU per job 0.32 ms against 0.31 with obmalloc, bench.abjobs 2026-12-07).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import platform
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Trim = Callable[[], object]
QUIET_ROUNDS = 10  # the most delays the release waits for the streams to stop closing


def malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim(0)``; None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


def exec_under_c_allocator(argv: list[str]) -> None:
    """Run ``corral`` with ``argv`` again in this process (same pid) with Python's small objects in glibc's heap
    (``PYTHONMALLOC=malloc``), so that ``malloc_trim`` can give back what a burst of streams used; returns at once
    when ``PYTHONMALLOC`` is set already (the user's choice, or this is that run) or the C library is not glibc."""
    if "PYTHONMALLOC" in os.environ or platform.libc_ver()[0] != "glibc":
        return
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    os.execve(sys.executable, [sys.executable, "-m", "corral", *argv], env)


def release_free_lists() -> None:
    """Empty the interpreter's free lists. A collection of the oldest generation empties them; with every object
    frozen first (``gc.freeze``) that collection examines none, so it costs well under a millisecond instead of a
    full collection's pause (tens of milliseconds for the API's ~90,000 tracked objects)."""
    gc.freeze()
    try:
        gc.collect()
    finally:
        gc.unfreeze()


def release_memory_of(trim: Trim | None) -> Trim:
    """What runs after a burst: the free lists emptied, then ``trim`` (glibc's) when there is one."""

    def release() -> None:
        started = time.perf_counter()
        release_free_lists()
        if trim is not None:
            trim()
        log.debug("gave freed memory back in %.1f ms", (time.perf_counter() - started) * 1e3)

    return release


class StreamGauge:
    """The streams open in this process, and the release of memory after a burst: once the open streams have
    fallen to a quarter of their peak since the last release, and by at least ``min_released``, ``trim`` runs
    when their count has not changed for ``delay`` seconds (at most ``QUIET_ROUNDS`` delays later), on the loop
    (a thread made for it then would itself be allocated in the burst's arenas and pin them). ``trim`` None:
    counting only."""

    def __init__(self, trim: Trim | None, min_released: int = 200, delay: float = 1.0) -> None:
        self.trim = trim
        self.min_released = min_released
        self.delay = delay
        self.open = 0
        self.peak = 0
        self.trims = 0
        self._pending: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"StreamGauge(open={self.open}, peak={self.peak}, trims={self.trims})"

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1
        released = self.peak - self.open
        if self.trim is None or self._pending is not None:
            return
        if released >= self.min_released and self.open <= self.peak // 4:
            self._pending = asyncio.get_running_loop().create_task(self._trim_later(), name="memory-release")

    async def _trim_later(self) -> None:
        assert self.trim is not None
        try:
            # until no stream opened or closed for a delay: the burst's tail left
            for _ in range(QUIET_ROUNDS):
                before = self.open
                await asyncio.sleep(self.delay)
                if self.open == before:
                    break
            self.trim()
            self.trims += 1
            log.debug("released memory after a burst of %d streams", self.peak)
        finally:
            self.peak = self.open
            self._pending = None

    @property
    def releasing(self) -> bool:
        """A release is due: it waits for the burst's tail to stop closing (``settled`` awaits it)."""
        return self._pending is not None

    async def settled(self) -> None:
        """Return once the release under way, if any, has run."""
        if self._pending is not None:
            await asyncio.shield(self._pending)

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)
