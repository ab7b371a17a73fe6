"""The one shape of a submitted job, whichever client submitted it.

Every client's ``submit`` returns a handle with the same members:

==================  =====================================================================================
``id``              the job's id (32 hex digits)
``status()``        its ``JobView`` now (``JobNotFound`` for an unknown or expired id)
``result(timeout)`` wait for it to end and return its ``JobView`` (``JobTimeout`` after ``timeout`` s)
``stream()``        its text as it is generated: ``chunk`` events, and ``retry`` when an attempt failed and
                    the text starts over
``events(start)``   every event of the job from ``seq`` ``start`` on, until the one that ends it
``cancel()``        cancel it: ``"cancelled"``, or ``"cancelling"`` while its worker stops it
                    (``JobNotCancellable`` when it has already ended)
==================  =====================================================================================

``Job`` (``Client``) and ``DirectJob`` (``DirectClient``) are ``JobHandle``s; ``AsyncJob`` (``AsyncClient``) has
the same members as coroutines, ``stream()`` and ``events()`` as async iterators. An event is a dict as the API's
``GET /jobs/{id}/events`` sends it: ``seq``, ``type`` (queued, started, chunk, retry, done, error, cancelled) and
the type's fields (a chunk's ``text``, a ``started`` event's ``worker`` and ``attempt``…).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from corral.common.errors import JobTimeout
from corral.common.schemas import TERMINAL_EVENTS, TERMINAL_STATUSES, JobView

POLL_INTERVAL = 0.05  # seconds between two looks at a job's status while waiting for its result


def is_last(event: dict[str, Any]) -> bool:
    """True for the event that ends a job's stream (done, error, cancelled)."""
    return event["type"] in TERMINAL_EVENTS


def is_text(event: dict[str, Any]) -> bool:
    """True for the events ``stream()`` gives: chunks, and ``retry`` (the text starts over)."""
    return event["type"] in ("chunk", "retry")


def timed_out(job_id: str, status: str, timeout: float | None) -> JobTimeout:
    return JobTimeout(f"job {job_id} still {status} after {timeout}s", job_id=job_id, status=status)


class JobHandle(ABC):
    """A submitted job of a synchronous client (see the module docstring for its members)."""

    def __init__(self, job_id: str) -> None:
        self.id = job_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"

    @abstractmethod
    def status(self) -> JobView:
        """The job's view now; ``JobNotFound`` for an unknown or expired id."""

    @abstractmethod
    def events(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Every event of the job with ``seq >= start``, in order, until the one that ends it."""

    @abstractmethod
    def cancel(self) -> str:
        """Cancel the job: ``"cancelled"``, or ``"cancelling"`` while its worker stops it."""

    def stream(self) -> Iterator[dict[str, Any]]:
        """The chunk events of the attempt that finishes (a ``retry`` restarts the text: it is signalled by a
        chunk-less event ``{"type": "retry"}`` so a caller can clear what it printed)."""
        return filter(is_text, self.events())

    def result(self, timeout: float | None = None) -> JobView:
        """Wait for the job to end and return its view (``text``, ``message``, ``embeddings``, ``final``);
        ``TimeoutError`` if it has not ended after ``timeout`` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        view = self.status()
        while view.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() > deadline:
                raise timed_out(self.id, view.status, timeout)
            time.sleep(POLL_INTERVAL)
            view = self.status()
        return view
