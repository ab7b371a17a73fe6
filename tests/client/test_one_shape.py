"""One scenario through the three clients (HTTP, asyncio, direct Redis) against real processes: each one's job
handle has the same members and behaves the same."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import pytest

from corral.client import AsyncClient, AsyncJob, Client, DirectClient
from corral.common.errors import BackendUnavailable, JobNotCancellable, JobNotFound, JobTimeout, ModelNotFound
from corral.common.schemas import JobView
from corral.simulator import expected_text

from ..conftest import Stack
from ..support import free_port

pytestmark = pytest.mark.integration
T = TypeVar("T")


class Handle(Protocol):
    """The shape under test (``JobHandle``'s members)."""

    id: str

    def status(self) -> JobView: ...
    def result(self, timeout: float | None = None) -> JobView: ...
    def stream(self) -> Iterator[dict[str, Any]]: ...
    def events(self, start: int = 0) -> Iterator[dict[str, Any]]: ...
    def cancel(self) -> str: ...


class Submitter(Protocol):
    def submit(self, model: str, prompt: str | None = None, **options: Any) -> Handle: ...
    def job(self, job_id: str) -> Handle: ...


class OnLoop:
    """An event loop in a thread of its own, so that the synchronous scenario can drive ``AsyncClient`` (from
    two threads at once: one follows a job's events while the other cancels it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await anext(events)

        while True:
            try:
                yield self.run(step())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Awaited:
    """An ``AsyncJob`` with each member awaited on ``OnLoop``: nothing of its own but the waiting."""

    def __init__(self, job: AsyncJob, on: OnLoop) -> None:
        self.job, self.on, self.id = job, on, job.id

    def status(self) -> JobView:
        return self.on.run(self.job.status())

    def result(self, timeout: float | None = None) -> JobView:
        return self.on.run(self.job.result(timeout))

    def stream(self) -> Iterator[dict[str, Any]]:
        return self.on.iterate(self.job.stream())

    def events(self, start: int = 0) -> Iterator[dict[str, Any]]:
        return self.on.iterate(self.job.events(start))

    def cancel(self) -> str:
        return self.on.run(self.job.cancel())


class AwaitedClient:
    def __init__(self, client: AsyncClient, on: OnLoop) -> None:
        self.client, self.on = client, on

    def submit(self, model: str, prompt: str | None = None, **options: Any) -> Awaited:
        return Awaited(self.on.run(self.client.submit(model, prompt, **options)), self.on)

    def job(self, job_id: str) -> Awaited:
        return Awaited(self.client.job(job_id), self.on)


@pytest.fixture(params=["http", "async", "direct"])
def corral(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Submitter]:
    if request.param == "http":
        with Client(stack.api) as client:
            yield client
    elif request.param == "direct":
        with DirectClient(stack.server.url) as direct:
            yield direct
    else:
        on = OnLoop()
        async_client = AsyncClient(stack.api)
        try:
            yield AwaitedClient(async_client, on)
        finally:
            on.run(async_client.aclose())
            on.close()


def follow_while(job: Handle, action: Callable[[], T]) -> tuple[list[dict[str, Any]], T]:
    """The job's events, followed from before ``action`` runs (its first event read) to its last."""
    first = threading.Event()

    def follow() -> list[dict[str, Any]]:
        events = []
        for event in job.events():
            events.append(event)
            first.set()
        return events

    with ThreadPoolExecutor(1) as pool:
        following = pool.submit(follow)
        assert first.wait(10), "no first event"
        done = action()
        return following.result(timeout=10), done


def test_the_same_scenario_through_each_client(corral: Submitter) -> None:
    prompt = f"one shape through {type(corral).__name__}"
    job = corral.submit("llama3", prompt)
    assert re.fullmatch("[0-9a-f]{32}", job.id)
    text = "".join(event["text"] for event in job.stream() if event["type"] == "chunk")
    assert text == expected_text("llama3", prompt)
    view = job.result(timeout=10)
    assert view.status == "succeeded" and view.text == text and view.final
    assert job.status() == view
    with pytest.raises(JobNotCancellable):
        job.cancel()

    waiting = corral.submit("not-here", "x", wait=True)  # no worker has the model: it waits in its queue
    assert waiting.status().status == "queued"
    with pytest.raises(JobTimeout, match="still queued"):  # a TimeoutError too, as Future.result raises
        waiting.result(timeout=0.2)
    events, outcome = follow_while(waiting, waiting.cancel)  # the cancel reaches a follower already waiting
    assert outcome == "cancelled" and [e["type"] for e in events] == ["queued", "cancelled"]
    assert waiting.result(timeout=10).status == "cancelled"

    missing = corral.job("0" * 32)
    calls: list[Callable[[], object]] = [
        lambda: missing.result(timeout=5),
        missing.status,
        missing.cancel,
        lambda: list(missing.stream()),
    ]
    for call in calls:
        with pytest.raises(JobNotFound):
            call()
    with pytest.raises(ModelNotFound):
        corral.submit("not-here", "x")


def test_direct_events_are_the_apis(stack: Stack) -> None:
    """The direct client reads the job's events where the API replays them from: the same dicts."""
    with Client(stack.api) as client, DirectClient(stack.server.url) as direct:
        job = client.submit("llama3", "the same events")
        over_redis = list(direct.job(job.id).events())
        assert [e["type"] for e in over_redis][:2] == ["queued", "started"]
        assert over_redis[-1]["type"] == "done" and list(job.events()) == over_redis


def test_nothing_to_reach_is_backend_unavailable() -> None:
    closed = free_port()
    with Client(f"http://127.0.0.1:{closed}") as client:
        with pytest.raises(BackendUnavailable, match="the API is unavailable"):
            client.submit("llama3", "x")
        with pytest.raises(BackendUnavailable):
            client.job("0" * 32).status()

    async def over_asyncio() -> None:
        async with AsyncClient(f"http://127.0.0.1:{closed}") as corral:
            with pytest.raises(BackendUnavailable):
                await corral.job("0" * 32).cancel()

    asyncio.run(over_asyncio())
    direct = DirectClient(f"redis://127.0.0.1:{closed}/0")
    with direct, pytest.raises(BackendUnavailable, match="redis unavailable"):
        direct.job("0" * 32).status()
