"""Corral's Python client: submit jobs, follow their tokens, wait for results.

    from corral import Client
    with Client("http://127.0.0.1:8000") as corral:
        job = corral.submit("llama3", "why is the sky blue?")
        for chunk in job.stream():
            print(chunk["text"], end="", flush=True)
        print(job.result().final)

``Client.from_redis(url)`` enqueues straight into Redis (as the workers see it), without the API.
``AsyncClient`` is the same over asyncio.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from corral.common.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidRequest,
    JobNotFound,
    ModelNotFound,
    RateLimited,
    Unauthorized,
)
from corral.common.schemas import TERMINAL_EVENTS, TERMINAL_STATUSES, JobRequest, JobView

NDJSON = {"Accept": "application/x-ndjson"}
STREAM_TIMEOUT = httpx.Timeout(30, read=None)
BATCH_SIZE = 1000  # jobs per POST /jobs/batch (the API's CORRAL_MAX_BATCH default)


def job_body(
    model: str, prompt: str | None, messages: list[dict[str, Any]] | None, **options: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, **options}
    if prompt is not None:
        body["prompt"] = prompt
    if messages is not None:
        body["messages"] = messages
    return body


def raise_for(response: httpx.Response) -> None:
    """Map an API error answer to Corral's exceptions."""
    if response.status_code < 400:
        return
    try:
        message = str(response.json().get("error"))
    except ValueError:
        message = response.text
    if response.status_code == 401:
        raise Unauthorized(message)
    if response.status_code == 403:
        raise Forbidden(message)
    if response.status_code == 429:
        retry = response.headers.get("retry-after", "1")
        raise RateLimited(message, retry_after=float(retry) if retry.isdigit() else 1.0)
    if response.status_code == 404 and "model" in message:
        raise ModelNotFound(message.split("'")[1] if "'" in message else message)
    if response.status_code == 404:
        raise JobNotFound(message)
    if response.status_code >= 500:
        raise BackendUnavailable(message, status=response.status_code)
    raise InvalidRequest(message, status=response.status_code)


class Job:
    """A submitted job: ``status()``, ``stream()`` (chunk events, resuming after a dropped connection),
    ``result(timeout)`` and ``cancel()``."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobView:
        response = self.client.http.get(f"/jobs/{self.id}")
        raise_for(response)
        return JobView.model_validate(response.json())

    def events(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Every event from ``start`` on, reconnecting with the last seq if the connection drops."""
        next_seq, failures = start, 0
        while failures < 10:
            try:
                params = {"from": next_seq}
                with self.client.http.stream("GET", f"/jobs/{self.id}/events", params=params, headers=NDJSON,
                                             timeout=STREAM_TIMEOUT) as response:  # fmt: skip
                    if response.status_code >= 400:
                        response.read()
                        raise_for(response)
                    for line in response.iter_lines():
                        if not line:
                            continue
                        event: dict[str, Any] = json.loads(line)
                        next_seq, failures = event["seq"] + 1, 0
                        yield event
                        if event["type"] in TERMINAL_EVENTS:
                            return
            except httpx.TransportError:
                failures += 1
                time.sleep(min(0.1 * 2**failures, 2.0))
        raise BackendUnavailable(f"lost the event stream of job {self.id}")

    def stream(self) -> Iterator[dict[str, Any]]:
        """The chunk events of the attempt that finishes (a ``retry`` restarts the text: it is signalled by a
        chunk-less event ``{"type": "retry"}`` so a caller can clear what it printed)."""
        for event in self.events():
            if event["type"] in ("chunk", "retry"):
                yield event

    def result(self, timeout: float | None = None) -> JobView:
        """Wait for the job to end and return its view (``text``, ``message``, ``embeddings``, ``final``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        view = self.status()
        while view.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {view.status} after {timeout}s")
            time.sleep(0.05)
            view = self.status()
        return view

    def cancel(self) -> str:
        response = self.client.http.delete(f"/jobs/{self.id}")
        raise_for(response)
        return str(response.json()["status"])


class Client:
    """A client of the Corral API (``api_key`` is sent as ``Authorization: Bearer``)."""

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit(self, model: str, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
               **options: Any) -> Job:  # fmt: skip
        """Queue a job; ``options`` are any ``POST /jobs`` fields (kind, options, images, tools, timeout, wait…)."""
        response = self.http.post("/jobs", json=job_body(model, prompt, messages, **options))
        raise_for(response)
        return Job(self, response.json()["id"])

    def submit_many(self, jobs: list[dict[str, Any]], batch_size: int = BATCH_SIZE) -> list[Job]:
        """Queue several jobs (each a ``POST /jobs`` body) through ``POST /jobs/batch``, ``batch_size`` per
        request: each request is all or nothing (an error names the job's index within it)."""
        handles = []
        for start in range(0, len(jobs), batch_size):
            response = self.http.post("/jobs/batch", json={"jobs": jobs[start : start + batch_size]})
            raise_for(response)
            handles += [Job(self, item["id"]) for item in response.json()["jobs"]]
        return handles

    def job(self, job_id: str) -> Job:
        return Job(self, job_id)

    @staticmethod
    def from_redis(url: str) -> DirectClient:
        return DirectClient(url)


class DirectClient:
    """Enqueue straight into Redis, as the API would (same validation, same records), without the API."""

    def __init__(self, url: str) -> None:
        from corral.common.connections import sync_redis
        from corral.common.jobs import Limits
        from corral.common.settings import Settings
        from corral.common.store import JobStore

        self.store = JobStore(
            sync_redis(url, name="corral-client"), Limits.from_settings(Settings(redis_url=url))
        )

    def close(self) -> None:
        self.store.redis.close()

    def submit(self, model: str, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
               **options: Any) -> str:  # fmt: skip
        try:
            request = JobRequest.model_validate(job_body(model, prompt, messages, **options))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return self.store.enqueue(request).id

    def status(self, job_id: str) -> JobView:
        return self.store.get(job_id)

    def result(self, job_id: str, timeout: float = 600) -> JobView:
        deadline = time.monotonic() + timeout
        view = self.store.get(job_id)
        while view.status not in TERMINAL_STATUSES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {view.status} after {timeout}s")
            time.sleep(0.05)
            view = self.store.get(job_id)
        return view

    def cancel(self, job_id: str) -> str:
        return self.store.cancel(job_id)


class AsyncClient:
    """The asyncio twin of ``Client`` for submitting and following jobs."""

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def submit(self, model: str, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
                     **options: Any) -> str:  # fmt: skip
        response = await self.http.post("/jobs", json=job_body(model, prompt, messages, **options))
        raise_for(response)
        return str(response.json()["id"])

    async def status(self, job_id: str) -> JobView:
        response = await self.http.get(f"/jobs/{job_id}")
        raise_for(response)
        return JobView.model_validate(response.json())

    async def events(self, job_id: str, start: int = 0) -> AsyncIterator[dict[str, Any]]:
        next_seq = start
        for _ in range(10):
            try:
                params = {"from": next_seq}
                async with self.http.stream("GET", f"/jobs/{job_id}/events", params=params, headers=NDJSON,
                                            timeout=STREAM_TIMEOUT) as response:  # fmt: skip
                    if response.status_code >= 400:
                        await response.aread()
                        raise_for(response)
                    async for line in response.aiter_lines():
                        if line:
                            event: dict[str, Any] = json.loads(line)
                            next_seq = event["seq"] + 1
                            yield event
                            if event["type"] in TERMINAL_EVENTS:
                                return
            except httpx.TransportError:
                continue
        raise BackendUnavailable(f"lost the event stream of job {job_id}")

    async def result(self, job_id: str) -> JobView:
        async for _event in self.events(job_id):
            pass
        return await self.status(job_id)

    async def cancel(self, job_id: str) -> str:
        response = await self.http.delete(f"/jobs/{job_id}")
        raise_for(response)
        return str(response.json()["status"])
