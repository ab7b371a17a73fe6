"""``AsyncClient``: Corral's API over HTTP, with asyncio. The same members as ``Client``, awaited.

from corral import AsyncClient
async with AsyncClient("http://127.0.0.1:8000") as corral:
    job = await corral.submit("llama3", "why is the sky blue?")
    async for chunk in job.stream():
        print(chunk.get("text", ""), end="", flush=True)
    print((await job.result(timeout=60)).final)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from corral.common.schemas import JobView

from .handles import is_last, is_text, timed_out
from .models import AsyncModelOps
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


class AsyncJob:
    """A job submitted through ``AsyncClient``: ``JobHandle``'s members as coroutines, ``stream()`` and
    ``events()`` as async iterators."""

    def __init__(self, client: AsyncClient, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def status(self) -> JobView:
        """The job's view now; ``JobNotFound`` for an unknown or expired id."""
        with api_reached():
            response = await self.client.http.get(f"/jobs/{self.id}")
        raise_for(response, self.id)
        return JobView.model_validate(response.json())

    async def events(self, start: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event from ``start`` on, until the one that ends the job, reconnecting from the last seq if the
        connection drops."""
        where = Resume(self.id, start)
        while True:
            try:
                async with self.client.http.stream("GET", f"/jobs/{self.id}/events", params=where.params,
                                                   headers=NDJSON, timeout=STREAM_TIMEOUT) as response:  # fmt: skip
                    if response.status_code >= 400:
                        await response.aread()
                        raise_for(response, self.id)
                    async for line in response.aiter_lines():
                        event = where.take(line)
                        if event is not None:
                            yield event
                            if is_last(event):
                                return
            except httpx.TransportError as exc:
                await asyncio.sleep(where.broke(exc))

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        """The chunk events of the attempt that finishes, and a chunk-less ``{"type": "retry"}`` when the text
        starts over."""
        async for event in self.events():
            if is_text(event):
                yield event

    async def result(self, timeout: float | None = None) -> JobView:
        """Wait for the job to end (following its events, no polling) and return its view; ``TimeoutError`` if it
        has not ended after ``timeout`` seconds (None: wait as long as it takes)."""
        try:
            async with asyncio.timeout(timeout):
                async for _event in self.events():
                    pass
        except TimeoutError:
            raise timed_out(self.id, (await self.status()).status, timeout) from None
        return await self.status()

    async def cancel(self) -> str:
        """Cancel the job: ``"cancelled"``, or ``"cancelling"`` while its worker stops it."""
        with api_reached():
            response = await self.client.http.delete(f"/jobs/{self.id}")
        raise_for(response, self.id)
        return str(response.json()["status"])


class AsyncClient:
    """The asyncio twin of ``Client``: an async context manager; ``http`` is its ``httpx.AsyncClient``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30,
                 transport: httpx.AsyncBaseTransport | None = None):  # fmt: skip
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self.models = AsyncModelOps(self.http)  # as Client.models, awaited

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def submit(self, model: str, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
                     idempotency_key: str | None = None, **options: Any) -> AsyncJob:  # fmt: skip
        """Queue a job; ``options`` are any ``POST /jobs`` fields (kind, options, images, tools, timeout, wait…).
        Retried with the same ``Idempotency-Key`` as ``Client.submit`` is."""
        body = job_body(model, prompt, messages, **options)
        response = await self._post_once("/jobs", body, idempotency_key)
        return AsyncJob(self, response.json()["id"])

    async def _post_once(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        retry = SubmitRetry(key)
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = await self.http.post(
                    path, json=body, headers=retry.headers
                )
            except httpx.TransportError as exc:
                outcome = exc
            if (answer := retry.answer(outcome)) is not None:
                return answer
            await asyncio.sleep(retry.pause)

    async def submit_many(self, jobs: list[dict[str, Any]], batch_size: int = BATCH_SIZE) -> list[AsyncJob]:
        """Queue several jobs through ``POST /jobs/batch``, ``batch_size`` per request (see ``Client``)."""
        handles = []
        for start in range(0, len(jobs), batch_size):
            response = await self._post_once("/jobs/batch", {"jobs": jobs[start : start + batch_size]})
            handles += [AsyncJob(self, item["id"]) for item in response.json()["jobs"]]
        return handles

    def job(self, job_id: str) -> AsyncJob:
        """The handle of a job submitted before (nothing is asked of the API until it is used)."""
        return AsyncJob(self, job_id)
