"""The direct link (common/link.py): a worker sends the chunk events of a job the API follows straight to it,
and the API takes them ahead of Redis' copy, which stays the record. The API runs in this process (to see what
came over the link), the worker and the simulator as processes, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from corral.common import keys, link
from corral.common.settings import Settings
from corral.simulator import expected_text

from ..conftest import Fleet
from ..inprocess import InProcessAPI
from ..support import wait_for

pytestmark = pytest.mark.integration
MODEL = "llama3:latest"


@pytest.fixture
def api(fleet: Fleet) -> Iterator[InProcessAPI]:
    app = InProcessAPI(Settings(redis_url=fleet.redis_url, janitor_interval=3600))
    try:
        yield app
    finally:
        app.close()


def stream(api: InProcessAPI, prompt: str, **more: Any) -> list[dict[str, Any]]:
    """A streamed submit's events (NDJSON)."""
    body = {"model": "llama3", "prompt": prompt, "stream": True, **more}
    response = api.request("POST", "/jobs", json=body, headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


def linked(api: InProcessAPI) -> None:
    """Until a worker has greeted the API's link (the API's loop runs only inside a request: run it here)."""

    async def greeted() -> None:
        for _ in range(400):
            if any(p.greeted for p in api.app.state.link.links):
                return
            await asyncio.sleep(0.025)
        raise AssertionError("no worker greeted the direct link")

    api.loop.run_until_complete(greeted())


def link_a_worker(fleet: Fleet, api: InProcessAPI, tps: int = 50) -> str:
    """A worker w1 that has run a job of this API, so it holds a link to it: its simulator's URL. (Its first token
    after 0.3 s: a job sent ahead is confirmed by then, so its first chunk goes over the link.)"""
    sim = fleet.simulator(MODEL, tps=tps, ttft=0.3)
    fleet.worker(sim, "w1")
    check(stream(api, "the first job makes the link"), "the first job makes the link")
    linked(api)
    return sim


def over_the_link(api: InProcessAPI, prompt: str) -> None:
    """A job whose chunks came over the link (at least the first: a chunk whose emit waits behind another's goes by
    Redis only), and each copy from Redis matched its link event (a mismatch would have added events)."""
    hub = api.app.state.hub
    before = hub.direct_events
    chunks = check(stream(api, prompt), prompt)
    assert 1 <= hub.direct_events - before <= chunks


def check(events: list[dict[str, Any]], prompt: str, num_predict: int | None = None) -> int:
    """Every event once, in order, the text whole; the number of chunk events."""
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "done"
    chunks = [e for e in events if e["type"] == "chunk"]
    assert "".join(e["text"] for e in chunks) == expected_text("llama3", prompt, num_predict)
    return len(chunks)


def test_a_followed_job_takes_its_chunks_from_the_link_and_redis_confirms_them(
    fleet: Fleet, api: InProcessAPI
) -> None:
    hub, server = api.app.state.hub, api.app.state.link
    registered = link.parse_registration(fleet.redis.get(keys.link_key(hub.reply_channel)))
    assert registered == ("127.0.0.1", server.port, server.token)
    link_a_worker(fleet, api)
    over_the_link(api, "one two three four five six seven")


def test_a_dropin_reader_takes_its_chunks_from_the_link_sent_before_their_emit(
    fleet: Fleet, api: InProcessAPI
) -> None:
    """A drop-in route's reader cannot resume elsewhere, so its job says ``link_first`` (worker/link.py): the chunks
    come over the link, the text is whole and Redis' copies confirm them. A streamed submit's job does not."""
    link_a_worker(fleet, api)
    hub = api.app.state.hub
    before = hub.direct_events
    prompt = "one two three four five six seven"
    body = {"model": "llama3", "prompt": prompt, "stream": True}
    response = api.request("POST", "/api/generate", json=body)
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert "".join(line["response"] for line in lines) == expected_text("llama3", prompt)
    assert lines[-1]["done"] is True
    assert 1 <= hub.direct_events - before <= len(lines) - 1
    kwargs = json.loads(fleet.redis.hget(keys.job_key(response.headers["X-Corral-Job"]), "data"))[3]
    assert kwargs["link_first"] is True and kwargs["reply_to"] == hub.reply_channel
    submitted = stream(api, prompt)
    assert "link_first" not in json.loads(fleet.redis.hget(keys.job_key(submitted[0]["job"]), "data"))[3]


def test_a_link_lost_mid_stream_leaves_the_stream_whole_and_is_made_again(
    fleet: Fleet, api: InProcessAPI
) -> None:
    hub, server = api.app.state.hub, api.app.state.link
    link_a_worker(fleet, api)
    before = hub.direct_events

    def deliver(raw: bytes) -> None:  # the API closes every link after the first event it took from one
        hub.direct(raw)
        if hub.direct_events - before == 1:
            for protocol in list(server.links):
                protocol.close()

    server.deliver = deliver
    prompt = " ".join(f"word{i}" for i in range(20))
    chunks = check(stream(api, prompt), prompt)
    assert 1 <= hub.direct_events - before < chunks  # the chunks after the cut came through Redis
    server.deliver = hub.direct
    linked(api)  # the worker made the link again
    over_the_link(api, "again and again")


def test_the_link_takes_only_its_greeting_and_only_events_of_followed_jobs(
    fleet: Fleet, api: InProcessAPI
) -> None:
    hub, server = api.app.state.hub, api.app.state.link

    async def talk(greeting: bytes, lines: bytes = b"") -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(greeting + lines)
        try:
            async with asyncio.timeout(10):
                return await reader.readline()
        finally:
            writer.close()

    def run(greeting: bytes, lines: bytes = b"") -> bytes:
        return api.loop.run_until_complete(talk(greeting, lines))

    assert run(link.greeting(hub.reply_channel, "0" * 32)) == b""  # a wrong token: closed
    assert run(link.greeting("corral:chunks:another-api", server.token)) == b""  # another API's channel
    assert run(b"x" * link.MAX_GREETING) == b""  # no greeting at all
    mailbox = hub.expect("f" * 32)
    stray = link.event_line("e" * 32, 2, "1", '{"type":"chunk","text":"not followed here"}')
    mine = link.event_line("f" * 32, 2, "1", '{"type":"chunk","text":"hi"}')
    assert run(link.greeting(hub.reply_channel, server.token), stray + b"not json\n" + mine) == link.ACCEPTED
    assert mailbox is not None
    event = api.loop.run_until_complete(asyncio.wait_for(mailbox.get(), 10))
    assert mailbox.empty()
    assert event.direct and event["text"] == "hi" and event.raw == mine[:-1]
    hub.forget("f" * 32)


def test_corral_api_takes_a_workers_link(fleet: Fleet) -> None:
    """The same over ``corral api`` (uvicorn, uvloop) and the drop-in route."""
    fleet.worker(fleet.simulator(MODEL), "w1")
    base = fleet.api(log_level="INFO")
    http = fleet.http(base)
    api_log = next(c for c in fleet.children if c.name.startswith("api-")).log_path

    def chat(text: str) -> str:
        body = {"model": "llama3", "messages": [{"role": "user", "content": text}]}
        lines = http.post("/api/chat", json=body).text.splitlines()
        return "".join(json.loads(line)["message"]["content"] for line in lines)

    assert chat("make the link") == expected_text("llama3", "make the link")
    wait_for(lambda: "direct link from ('127.0.0.1'" in api_log.read_text(), what="the worker's link")
    assert chat("over the link") == expected_text("llama3", "over the link")


def test_idle_connections_that_never_greet_are_capped(fleet: Fleet, api: InProcessAPI) -> None:
    from corral.api.link import GREETING_TIMEOUT, MAX_UNGREETED

    server = api.app.state.link

    async def flood() -> bytes:
        writers = []
        try:
            for _ in range(MAX_UNGREETED):
                writers.append((await asyncio.open_connection("127.0.0.1", server.port))[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writers.append(writer)
            async with asyncio.timeout(GREETING_TIMEOUT / 2):  # closed at once, not at the greeting's timeout
                return await reader.read()
        finally:
            for writer in writers:
                writer.close()

    assert api.loop.run_until_complete(flood()) == b""


def parked_here(api: InProcessAPI, *workers: str) -> None:
    """Until every one of ``workers`` has said on its link that it is parked (the loop runs only here)."""

    async def parked() -> None:
        for _ in range(400):
            if set(workers) <= set(api.app.state.link.parked):
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"not parked on the link: {set(workers) - set(api.app.state.link.parked)}")

    api.loop.run_until_complete(parked())


def sim_stats(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(url + "/sim/stats").json()  # type: ignore[no-any-return]


def test_a_parked_worker_is_sent_the_job_ahead_of_its_enqueue(fleet: Fleet, api: InProcessAPI) -> None:
    server = api.app.state.link
    sim = link_a_worker(fleet, api)
    parked_here(api, "w1")
    before, requests = server.handed_early, sim_stats(sim)["requests"]
    events = stream(api, "sent ahead")
    chunks = check(events, "sent ahead")
    assert server.handed_early == before + 1
    assert [e["type"] for e in events].count("started") == 1 and events[1]["worker"] == "w1"
    assert sim_stats(sim)["requests"] == requests + 1  # one run: the hand confirmed the early start
    job = api.request("GET", f"/jobs/{events[0]['job']}").json()
    assert (job["status"], job["attempt"], job["worker"]) == ("succeeded", 1, "w1")
    assert chunks > 0
    parked_here(api, "w1")
    long = "long " * 120_000  # 600 kB: over half a link line, so it goes the usual way
    check(stream(api, long, options={"num_predict": 3}), long, 3)
    assert server.handed_early == before + 1


def test_a_job_sent_ahead_that_the_enqueue_gives_to_another_worker_is_fenced_off_there(
    fleet: Fleet, api: InProcessAPI
) -> None:
    """w1 gets the job over the link, but Redis hands it to w2 (the API named no worker to prefer here, and w2 is
    as warm and as free, with the greater id): w1's run writes nothing, w2's is the job's only one."""
    import httpx

    hub, server = api.app.state.hub, api.app.state.link
    # w1's tokens come 0.2 s apart: its early run learns it is fenced off (at its first event) long before its end
    sims = {"w1": fleet.simulator(MODEL, tps=5), "w2": fleet.simulator(MODEL)}
    fleet.worker(sims["w1"], "w1", worker_slots=1)
    stream(api, "w1 makes the link")
    linked(api)
    httpx.post(sims["w2"] + "/api/generate", json={"model": MODEL, "prompt": "load it", "stream": False})
    fleet.worker(sims["w2"], "w2", worker_slots=1, direct_link="false")  # (Redis only: what w1 sends shows)
    parked_here(api, "w1")
    wait_for(lambda: (fleet.redis.zscore(keys.parked_key(MODEL), "w2") or 0) > 1e6, what="w2 parked warm")
    early = server.hand_early

    def to_w1_only(job: Any) -> str:
        assert early(job) == "w1"
        return ""

    hub.hand_early = to_w1_only
    before = {w: sim_stats(sim) for w, sim in sims.items()}
    direct = hub.direct_events
    events = stream(api, "one run only")
    check(events, "one run only")
    assert events[1]["worker"] == "w2"
    job = api.request("GET", f"/jobs/{events[0]['job']}").json()
    assert (job["status"], job["attempt"], job["worker"]) == ("succeeded", 1, "w2")
    assert hub.direct_events == direct  # w1's run sent nothing
    after = {w: sim_stats(sim) for w, sim in sims.items()}
    assert after["w2"]["completed"] == before["w2"]["completed"] + 1
    # its early run, stopped at its first event
    assert after["w1"]["requests"] == before["w1"]["requests"] + 1
    assert after["w1"]["completed"] == before["w1"]["completed"]
    hub.hand_early = early
    parked_here(api, "w1")  # w1's slot is free again: it parks
