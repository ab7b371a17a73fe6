"""``/hosts`` in the app (in-process, a real Redis): admin scope, no secret in any answer, health from the worker's
heartbeat, and a connection test asked of a fleet process over Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.settings import Settings

from ..inprocess import API_KEYS, KEYS, InProcessAPI
from ..support import free_port

pytestmark = pytest.mark.integration
TOKEN = "tok-api-7f1e0c"
ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessAPI, redis.Redis]]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("hosts") / "redis").start()
    client = redis.Redis.from_url(server.url)
    app = InProcessAPI(Settings(redis_url=server.url, api_keys=API_KEYS, rate_limit=0,  # type: ignore[arg-type]
                                janitor_interval=3600))  # fmt: skip
    yield app, client
    app.close()
    client.close()
    server.kill()


def test_admin_only_and_no_secret_in_any_answer(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, client = api
    body = {"url": "http://ops:pw-31@gpu-1:11434", "token": TOKEN, "headers": f"X-Key={TOKEN}", "slots": 2}
    for scope in ("read", "submit"):
        headers = {"Authorization": f"Bearer {KEYS[scope]}"}
        assert app.request("GET", "/hosts", headers=headers).status_code == 403
        assert app.request("POST", "/hosts", json=body, headers=headers).status_code == 403
    added = app.request("POST", "/hosts", json=body, headers=ADMIN)
    assert added.status_code == 201, added.text
    host = added.json()
    assert (host["name"], host["url"], host["kind"], host["slots"]) == (
        "gpu-1-11434", "http://ops:***@gpu-1:11434", "ollama", 2)  # fmt: skip
    assert host["token"] is True and host["headers"] == ["X-Key"]
    assert host["health"] == {"status": "waiting", "served_by": None}
    answers = [added.text, app.request("GET", "/hosts", headers=ADMIN).text,
               app.request("GET", "/hosts/gpu-1-11434", headers=ADMIN).text]  # fmt: skip
    for text in answers:
        assert TOKEN not in text and "pw-31" not in text
    assert json.loads(client.hget(keys.HOST_SECRETS, "gpu-1-11434") or b"{}")["token"] == TOKEN
    assert app.request("DELETE", "/hosts/gpu-1-11434", headers=ADMIN).json() == {
        "name": "gpu-1-11434", "status": "draining"}  # fmt: skip
    assert client.hlen(keys.HOSTS) == 0 and client.hlen(keys.HOST_SECRETS) == 0


def test_bad_host_422_unknown_404(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, _ = api
    assert app.request("POST", "/hosts", json={"url": "gpu-1:11434"}, headers=ADMIN).status_code == 422
    assert (
        app.request("POST", "/hosts", json={"url": "http://a", "slots": 0}, headers=ADMIN).status_code == 422
    )
    for method, path in (("GET", "/hosts/nope"), ("DELETE", "/hosts/nope"), ("POST", "/hosts/nope/test")):
        response = app.request(method, path, headers=ADMIN)
        assert response.status_code == 404 and response.json()["code"] == "host_not_found", response.text


def test_health_follows_the_worker_heartbeat(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, client = api
    app.request("POST", "/hosts", json={"url": "http://127.0.0.1:9", "name": "h1"}, headers=ADMIN)
    client.set(keys.host_lease_key("h1"), "fleet-x")
    beat = {"id": "h1", "state": "active", "healthy": 0, "models": '["llama3:latest"]', "slots_total": 4,
            "slots_busy": 1, "last_seen": time.time()}  # fmt: skip
    client.hset(keys.worker_key("h1"), mapping=beat)  # type: ignore[arg-type]
    health = app.request("GET", "/hosts/h1", headers=ADMIN).json()["health"]
    assert health["status"] == "unhealthy" and health["served_by"] == "fleet-x"
    assert health["models"] == ["llama3:latest"] and health["slots_busy"] == 1
    client.hset(keys.worker_key("h1"), "healthy", 1)
    assert app.request("GET", "/hosts", headers=ADMIN).json()["hosts"][0]["health"]["status"] == "serving"
    client.hset(keys.worker_key("h1"), "state", "draining")
    assert app.request("GET", "/hosts/h1", headers=ADMIN).json()["health"]["status"] == "draining"
    app.request("DELETE", "/hosts/h1", headers=ADMIN)


def test_connection_test_is_asked_of_a_fleet_process(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, client = api
    app.request("POST", "/hosts", json={"url": "http://127.0.0.1:9", "name": "t1"}, headers=ADMIN)
    alone = app.request("POST", "/hosts/t1/test", headers=ADMIN)
    assert alone.status_code == 503 and "no fleet process" in alone.json()["error"]
    pubsub = client.pubsub()
    pubsub.subscribe(keys.HOSTS_CHANNEL)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]

    def fleet_answers() -> None:  # what a fleet process does with the request (worker/fleet.py)
        asked = json.loads(pubsub.get_message(timeout=10)["data"])  # type: ignore[index]
        answer = {"name": asked["test"], "ok": True, "code": 0, "checks": [], "served_by": "fleet-x"}
        client.rpush(keys.host_test_key(asked["reply"]), json.dumps(answer))

    thread = threading.Thread(target=fleet_answers)
    thread.start()
    response = app.request("POST", "/hosts/t1/test", headers=ADMIN)
    thread.join(10)
    pubsub.close()
    assert response.status_code == 200 and response.json()["served_by"] == "fleet-x", response.text
    assert not client.keys(keys.host_test_key("*"))
    app.request("DELETE", "/hosts/t1", headers=ADMIN)
