"""No job is left ``running`` without a worker running it: a pop's reply or a hand-off message lost with its
connection (a lossy proxy between the worker and Redis), a graceful stop with such a job in the worker's in-flight
list. The janitor's side (the lists of unregistered workers) is in tests/common/test_janitor.py."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.simulator import expected_text

from ..conftest import Fleet
from ..lossyproxy import LossyProxy
from ..support import wait_for
from .test_lifecycle import ended, status

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[LossyProxy]:
    lossy = LossyProxy(redis_server.port).start()
    yield lossy
    lossy.stop()


def test_a_lost_pop_reply_is_requeued_by_the_live_worker(fleet: Fleet, proxy: LossyProxy) -> None:
    sim = fleet.simulator("llama3:latest")
    fleet.worker(sim, "w1", redis_url=proxy.url, push_dispatch="false")
    http = fleet.http(fleet.api())
    proxy.lose(b"lost-pop-reply")  # the pop that takes the job runs; its reply never reaches the worker
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "lost-pop-reply"}).json()["id"]
    view = ended(http, job_id, timeout=15)
    assert proxy.dropped == 1
    assert view["status"] == "succeeded" and view["attempt"] == 2 and view["worker"] == "w1"
    assert view["text"] == expected_text("llama3", "lost-pop-reply")
    assert fleet.redis.llen(keys.inflight_key("w1")) == 0
    later = http.post("/jobs", json={"model": "llama3", "prompt": "later"}).json()["id"]
    assert ended(http, later)["attempt"] == 1


def test_a_lost_hand_off_is_requeued_by_the_live_worker(fleet: Fleet, proxy: LossyProxy) -> None:
    """Push dispatch: the enqueue hands the job to the parked worker (it is in the worker's in-flight list at once)
    and its control message is lost, and so is the reply of the next pop, which returns the hand the park kept.
    The in-flight check leaves the hand alone while the park keeps it, and re-queues it once after that pop:
    attempt 2 (before, checks that came before the pop re-queued the hand, and the pop of attempt 2 lost its
    reply: attempt 3; tests/worker/test_reconcile_park.py)."""
    sim = fleet.simulator("llama3:latest")
    fleet.worker(sim, "w1", redis_url=proxy.url)
    http = fleet.http(fleet.api())
    wait_for(lambda: fleet.redis.zscore(keys.parked_key("llama3:latest"), "w1") is not None, what="w1 parked")
    proxy.lose(b"lost-hand-off", drops=2)
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "lost-hand-off"}).json()["id"]
    view = ended(http, job_id, timeout=15)
    assert proxy.dropped == 2
    assert view["status"] == "succeeded" and view["attempt"] == 2
    assert fleet.redis.llen(keys.inflight_key("w1")) == 0


def test_sigterm_requeues_an_in_flight_job_it_does_not_run(
    fleet: Fleet, proxy: LossyProxy, redis_server: RedisServer
) -> None:
    """The periodic check is far off (a long heartbeat interval): the stop itself puts the job back, before the
    worker leaves corral:workers (after which only the janitor's walk would find the list)."""
    sim = fleet.simulator("llama3:latest")
    slow = {"heartbeat_interval": 60.0, "heartbeat_ttl": 180.0}
    worker = fleet.worker(sim, "w1", redis_url=proxy.url, push_dispatch="false", **slow)
    http = fleet.http(fleet.api(janitor_interval=3600))
    proxy.lose(b"stopped-worker")
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "stopped-worker"}).json()["id"]
    wait_for(
        lambda: proxy.dropped == 1 and status(http, job_id)["status"] == "running", what="pop reply lost"
    )
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(15) == 0
    view = status(http, job_id)
    assert (view["status"], view["attempt"]) == ("queued", 2)
    assert fleet.redis.llen(keys.inflight_key("w1")) == 0 and fleet.redis.zscore(keys.WORKERS, "w1") is None
    fleet.worker(sim, "w2")
    assert ended(http, job_id)["status"] == "succeeded"
