"""Model operations through the API in-process against a real Redis, no worker process: the admin scope (a non-admin
key gets 403 and Redis is unchanged), the operation and its tasks written for the placed workers, an API restart,
cancel, and the drop-in stream's lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from corral.api.modelops import PullLines, placement_of
from corral.common import keys, registry
from corral.common.errors import InvalidRequest
from corral.common.placement import Placement
from corral.common.settings import Settings

from ..conftest import RedisServer
from ..inprocess import API_KEYS, KEYS, InProcessAPI

pytestmark = pytest.mark.integration
WRITES = [("POST", "/api/pull", {"model": "phi3"}), ("DELETE", "/api/delete", {"model": "llama3"}),
          ("POST", "/api/copy", {"source": "llama3", "destination": "x"}), ("POST", "/api/create", {"model": "x"}),
          ("POST", "/models/pull", {"model": "phi3"}), ("POST", "/models/delete", {"model": "llama3"}),
          ("POST", "/models/load", {"model": "llama3"}), ("DELETE", "/models/ops/op-1", None)]  # fmt: skip


def beat(r: redis.Redis, worker: str, models: list[str]) -> None:
    info = registry.WorkerInfo(id=worker, host="h", pid=1, ollama_url="http://x", slots_total=2,
                               started_at=time.time(), models=models)  # fmt: skip
    pipe = r.pipeline(transaction=True)
    registry.heartbeat_commands(pipe, info, 60, set())
    pipe.execute()


@pytest.fixture
def api(redis_server: RedisServer, r: redis.Redis) -> Iterator[InProcessAPI]:
    for worker in ("w1", "w2"):
        beat(r, worker, ["llama3:latest"])
    app = InProcessAPI(Settings(redis_url=redis_server.url, api_keys=API_KEYS, rate_limit=0,  # type: ignore[arg-type]
                                janitor_interval=3600))  # fmt: skip
    yield app
    app.close()


def snapshot(r: redis.Redis) -> dict[bytes, bytes]:
    return {k: r.dump(k) or b"" for k in r.keys("corral:*") if k != keys.JANITOR_LOCK.encode()}


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_non_admin_key_gets_403_and_redis_is_unchanged(api: InProcessAPI, r: redis.Redis, method: str,
                                                        path: str, body: dict[str, str] | None) -> None:  # fmt: skip
    before = snapshot(r)
    for scope in ("read", "submit"):
        response = api.request(method, path, json=body, headers={"Authorization": f"Bearer {KEYS[scope]}"})
        assert response.status_code == 403, response.text
    assert snapshot(r) == before
    assert not r.keys("corral:modelop*") and not r.keys("corral:modeltasks:*")


def test_an_operation_is_durable_work_for_each_placed_worker(api: InProcessAPI, r: redis.Redis,
                                                           redis_server: RedisServer) -> None:  # fmt: skip
    admin = {"Authorization": f"Bearer {KEYS['admin']}"}
    op = api.request("POST", "/models/pull", json={"model": "phi3", "all": True}, headers=admin).json()
    assert op["status"] == "queued" and sorted(op["hosts"]) == ["w1", "w2"]
    for worker in ("w1", "w2"):
        (task,) = r.lrange(keys.model_tasks_key(worker), 0, -1)
        assert json.loads(task) == {"op": op["id"], "kind": "pull", "model": "phi3:latest", "params": {}}
    again = api.request("POST", "/models/pull", json={"model": "phi3", "hosts": ["w2"]}, headers=admin).json()
    assert again["id"] == op["id"] and again["coalesced"] is True  # w2 pulls it already
    # another API (as after a restart) finds the operation in Redis
    api2 = InProcessAPI(Settings(redis_url=redis_server.url, api_keys=API_KEYS, rate_limit=0))  # type: ignore[arg-type]
    try:
        assert api2.request("GET", f"/models/ops/{op['id']}", headers=admin).json()["status"] == "queued"
        listed = api2.request("GET", "/models/ops?active=true", headers=admin).json()["operations"]
        assert [o["id"] for o in listed] == [op["id"]]
        cancelled = api2.request("DELETE", f"/models/ops/{op['id']}", headers=admin).json()
        assert cancelled["status"] == "cancelled"
        assert r.llen(keys.model_tasks_key("w1")) == r.llen(keys.model_tasks_key("w2")) == 0
        lines = api2.request("GET", f"/models/ops/{op['id']}/events", headers=admin).text.splitlines()
        assert [json.loads(x)["type"] for x in lines] == ["queued", "host", "host", "cancelled"]
        missing = api2.request("DELETE", "/api/delete", json={"model": "nope"}, headers=admin)
        assert missing.status_code == 404 and missing.json() == {"error": "model 'nope:latest' not found"}
    finally:
        api2.close()


def test_placement_of_a_body() -> None:
    assert placement_of({}, 1) == Placement(replicas=1)
    assert placement_of({}, 0) == Placement(every=True, replicas=0)
    assert placement_of({"hosts": "a, b"}) == Placement(hosts=("a", "b"))
    assert placement_of({"all": True}) == Placement(every=True)
    for bad in ({"hosts": ["a"], "all": True}, {"replicas": -1}, {"replicas": True}, {"hosts": [1]}):
        with pytest.raises(InvalidRequest):
            placement_of(bad)


def test_pull_lines_sum_the_hosts_bytes() -> None:
    lines = PullLines()
    d = "sha256:" + "ab" * 32
    assert lines.line({"type": "queued", "hosts": ["a", "b"]}) == {"status": "pulling manifest"}
    assert lines.line({"type": "progress", "worker": "a", "status": "starting"}) is None
    lines.line({"type": "progress", "worker": "a", "digest": d, "total": 100, "completed": 50})
    out = lines.line({"type": "progress", "worker": "b", "digest": d, "total": 100, "completed": 10})
    assert out == {"status": "pulling abababababab", "digest": d, "total": 200, "completed": 60}
    assert PullLines.ending({"type": "done"})[-1] == {"status": "success"}
    assert PullLines.ending({"type": "error", "error": "a: disk full"}) == [{"error": "a: disk full"}]
