"""Giving memory back once a burst of streams has ended.

Thousands of readers leave glibc's heap full of free holes (their buffers, transports, tasks): Python frees the
objects, but glibc returns to the system only the top of each heap, so the API's RSS stayed ~50 MB over idle
after 3,000 readers had gone. ``malloc_trim(0)`` gives every free page back. It takes a few milliseconds per
hundred megabytes and holds glibc's arena locks, so it runs in a thread (ctypes releases the GIL), once, a second
after most of a burst has left, never on a request's path.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Trim = Callable[[], object]


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


class StreamGauge:
    """The streams open in this process, and the trim after a burst: once the open streams have fallen to a
    quarter of their peak since the last trim, and by at least ``min_released``, ``trim`` runs ``delay`` seconds
    later in a thread. ``trim`` None: counting only."""

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
            self._pending = asyncio.get_running_loop().create_task(self._trim_later(), name="malloc-trim")

    async def _trim_later(self) -> None:
        assert self.trim is not None
        try:
            await asyncio.sleep(self.delay)  # the last readers' transports close meanwhile
            await asyncio.to_thread(self.trim)
            self.trims += 1
            log.debug("gave freed memory back after a burst of %d streams", self.peak)
        finally:
            self.peak = self.open
            self._pending = None

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)
