"""``Client``: Corral's API over HTTP, synchronously.

    from corral import Client
    with Client("http://127.0.0.1:8000") as corral:
        job = corral.submit("llama3", "why is the sky blue?")
        for chunk in job.stream():
            print(chunk.get("text", ""), end="", flush=True)
        print(job.result(timeout=60).final)

Errors are Corral's exceptions (``corral.common.errors``): the API's error answers as their kind, an API that
cannot be reached as ``BackendUnavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from corral.common.schemas import JobView

from .handles import JobHandle, is_last
from .models import ModelOps
from .protocol import (
    BATCH_SIZE,
    NDJSON,
    STREAM_TIMEOUT,
    Resume,
    SubmitRetry,
    api_reached,
    job_body,
    raise_for,
)

if TYPE_CHECKING:
    from .direct import DirectClient


class Job(JobHandle):
    """A job submitted through ``Client`` (or named by ``Client.job(id)``); its members are ``JobHandle``'s."""

    def __init__(self, client: Client, job_id: str) -> None:
        super().__init__(job_id)
        self.client = client

    def status(self) -> JobView:
        with api_reached():
            response = self.client.http.get(f"/jobs/{self.id}")
        raise_for(response, self.id)
        return JobView.model_validate(response.json())

    def events(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Every event from ``start`` on, reconnecting from the last seq if the connection drops."""
        where = Resume(self.id, start)
        while True:
            try:
                with self.client.http.stream("GET", f"/jobs/{self.id}/events", params=where.params,
                                             headers=NDJSON, timeout=STREAM_TIMEOUT) as response:  # fmt: skip
                    if response.status_code >= 400:
                        response.read()
                        raise_for(response, self.id)
                    for line in response.iter_lines():
                        event = where.take(line)
                        if event is not None:
                            yield event
                            if is_last(event):
                                return
            except httpx.TransportError as exc:
                time.sleep(where.broke(exc))

    def cancel(self) -> str:
        with api_reached():
            response = self.client.http.delete(f"/jobs/{self.id}")
        raise_for(response, self.id)
        return str(response.json()["status"])


class Client:
    """A client of the Corral API (``api_key`` is sent as ``Authorization: Bearer``); a context manager that
    closes its connections. ``http`` is its ``httpx.Client``, for the routes it has no method for; ``transport``
    an httpx transport for it (a proxy's, a test's)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30,
                 transport: httpx.BaseTransport | None = None):  # fmt: skip
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.models = ModelOps(self.http)  # pull, delete, copy, create, load (docs/models.md)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit(self, model: str, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
               idempotency_key: str | None = None, **options: Any) -> Job:  # fmt: skip
        """Queue a job; ``options`` are any ``POST /jobs`` fields (kind, options, images, tools, timeout, wait…).
        A lost connection or a 503 is retried with the same ``Idempotency-Key`` (``idempotency_key``, or a new
        one per call): the job is queued once."""
        response = self._post_once("/jobs", job_body(model, prompt, messages, **options), idempotency_key)
        return Job(self, response.json()["id"])

    def _post_once(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        retry = SubmitRetry(key)
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = self.http.post(
                    path, json=body, headers=retry.headers
                )
            except httpx.TransportError as exc:
                outcome = exc
            if (answer := retry.answer(outcome)) is not None:
                return answer
            time.sleep(retry.pause)

    def submit_many(self, jobs: list[dict[str, Any]], batch_size: int = BATCH_SIZE) -> list[Job]:
        """Queue several jobs (each a ``POST /jobs`` body) through ``POST /jobs/batch``, ``batch_size`` per
        request: each request is all or nothing (an error names the job's index within it)."""
        handles = []
        for start in range(0, len(jobs), batch_size):
            response = self._post_once("/jobs/batch", {"jobs": jobs[start : start + batch_size]})
            handles += [Job(self, item["id"]) for item in response.json()["jobs"]]
        return handles

    def job(self, job_id: str) -> Job:
        """The handle of a job submitted before (nothing is asked of the API until it is used)."""
        return Job(self, job_id)

    @staticmethod
    def from_redis(url: str) -> DirectClient:
        """A ``DirectClient`` on the Redis at ``url``: jobs enqueued without the API."""
        from .direct import DirectClient

        return DirectClient(url)
