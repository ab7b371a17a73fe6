"""``DirectClient``: jobs enqueued straight into Redis, as the API enqueues them (same validation, same records,
same scripts), for a program beside the fleet that has no API to talk to.

    from corral import DirectClient
    with DirectClient("redis://127.0.0.1:6379/0") as corral:   # or Client.from_redis(url)
        job = corral.submit("llama3", "why is the sky blue?")
        for chunk in job.stream():
            print(chunk.get("text", ""), end="", flush=True)
        print(job.result(timeout=60).final)

A job's events are read from its Redis replay stream (``keys.events_key``), the one the API replays from, so they
are the API's events, field for field. Redis that cannot be reached raises ``BackendUnavailable``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from corral.common import keys
from corral.common.errors import BackendUnavailable, InvalidRequest, JobNotFound
from corral.common.schemas import JobRequest, JobView
from corral.common.settings import Settings

from .handles import JobHandle, is_last
from .protocol import job_body

if TYPE_CHECKING:
    from corral.common.store import JobStore

IDLE_MS = 5000  # a blocking read's longest wait before it looks whether the job still exists


@contextlib.contextmanager
def redis_reached() -> Iterator[None]:
    """Redis that cannot be reached (after the connection's own retries) raises ``BackendUnavailable``."""
    from corral.common.connections import TRANSIENT

    try:
        yield
    except TRANSIENT as exc:
        raise BackendUnavailable(f"redis unavailable: {exc}") from exc


class DirectJob(JobHandle):
    """A job submitted through ``DirectClient`` (or named by ``DirectClient.job(id)``); its members are
    ``JobHandle``'s, read from and written to Redis."""

    def __init__(self, client: DirectClient, job_id: str) -> None:
        super().__init__(job_id)
        self.client = client

    def status(self) -> JobView:
        with redis_reached():
            return self.client.store.get(self.id)

    def events(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Every event from ``start`` on: the replay stream, then blocking reads of what the worker adds to it,
        until the event that ends the job (or the job has expired, as the API's stream ends then too)."""
        redis = self.client.store.redis
        stream = keys.events_key(self.id)
        with redis_reached():
            if not redis.exists(keys.job_key(self.id)):
                raise JobNotFound(self.id)
        last: bytes | str = f"{start}-0"  # entry ids are <seq + 1>-0: this one is seq start - 1's
        while True:
            with redis_reached():
                reply = redis.xread({stream: last}, block=IDLE_MS)
                if not reply and not redis.exists(keys.job_key(self.id)):
                    return
            for entry_id, fields in reply[0][1] if reply else ():
                last = entry_id
                event: dict[str, Any] = json.loads(fields[b"e"])
                yield event
                if is_last(event):
                    return

    def cancel(self) -> str:
        with redis_reached():
            return self.client.store.cancel(self.id)


class DirectClient:
    """Enqueue straight into the Redis at ``url``, as the API would, without the API; a context manager that
    closes its connection. The limits (prompt size, queue depth, timeouts) are ``Settings``' defaults and
    ``CORRAL_*`` environment variables, as the API reads them."""

    def __init__(self, url: str) -> None:
        # imported here: `import corral` stays without redis-py and the store (~0.15 s) for HTTP-only programs
        from corral.common.connections import sync_redis
        from corral.common.jobs import Limits
        from corral.common.store import JobStore

        limits = Limits.from_settings(Settings(redis_url=url))
        self.store: JobStore = JobStore(sync_redis(url, name="corral-client"), limits)

    def __enter__(self) -> DirectClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.redis.close()

    def submit(self, model: str, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
               **options: Any) -> DirectJob:  # fmt: skip
        """Queue a job; ``options`` are any ``POST /jobs`` fields (kind, options, images, tools, timeout, wait…)."""
        try:
            request = JobRequest.model_validate(job_body(model, prompt, messages, **options))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        with redis_reached():
            return DirectJob(self, self.store.enqueue(request).id)

    def job(self, job_id: str) -> DirectJob:
        """The handle of a job submitted before (nothing is read from Redis until it is used)."""
        return DirectJob(self, job_id)
