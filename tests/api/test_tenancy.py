"""Tenancy with API keys: every route of the app (from its route table, so a route added later is walked too),
called with two tenants' submit keys and a read key, never shows one tenant's job ids to another; admin keys
see every job. And a non-admin key may not name another submitter for fair share (403, nothing written)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from corral.api import create_app
from corral.api.apikeys import hash_key, key_id
from corral.cli.embedded_redis import RedisServer
from corral.common.registry import WorkerInfo, heartbeat_commands
from corral.common.settings import Settings

from ..inprocess import API_KEYS, KEYS, InProcessAPI, fill, routes, snapshot
from ..support import free_port

pytestmark = pytest.mark.integration
TENANT_B = "test-tenant-b-submit-key-0123456789"
ALICE, BOB, READER, ADMIN = KEYS["submit"], TENANT_B, KEYS["read"], KEYS["admin"]
TENANTS = (ALICE, BOB)  # each submits one job
CALLERS = (ALICE, BOB, READER)  # the keys every route is called with
UNKNOWN_JOB = "f" * 32
# enough of a body for every POST route to get past validation (no live worker serves the model)
BODY = {"model": "llama3", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "input": "hi"}
WAITING = {"model": "nobody-serves-this", "prompt": "x", "wait": True}
# the routes that list jobs: each tenant must find its own job in them (so the walk is not vacuous)
LISTINGS = ("/jobs", "/dashboard/data", "/workers")
ROUTES = routes(create_app(Settings()))


class Tenants:
    def __init__(self, api: InProcessAPI, redis_client: redis.Redis) -> None:
        self.api, self.redis = api, redis_client
        self.jobs: dict[str, str] = {}  # key → the id of the job it submitted

    def call(
        self, method: str, path: str, key: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        return self.api.request(
            method, path, headers={"Authorization": f"Bearer {key}", **(headers or {})}, **kwargs
        )


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("tenancy") / "redis").start()
    settings = Settings(redis_url=server.url, api_keys=f"{API_KEYS},{TENANT_B}:submit",  # type: ignore[arg-type]
                        rate_limit=0, janitor_interval=3600)  # fmt: skip
    api = InProcessAPI(settings)
    client = redis.Redis.from_url(server.url)
    try:
        found = Tenants(api, client)
        for key in TENANTS:
            answer = found.call("POST", "/jobs", key, json=WAITING)
            assert answer.status_code == 202, answer.text
            found.jobs[key] = answer.json()["id"]
            # cancelled, so that their event streams end; they stay in the history, the recent list and a
            # worker's running list below
            assert found.call("DELETE", f"/jobs/{found.jobs[key]}", key).status_code == 200
        worker = WorkerInfo(id="w1", host="h", pid=1, ollama_url="http://127.0.0.1:1", slots_total=4,
                            started_at=time.time(), running=list(found.jobs.values()))  # fmt: skip
        pipe = client.pipeline(transaction=True)
        heartbeat_commands(pipe, worker, 3600, set())
        pipe.execute()
        yield found
    finally:
        client.close()
        api.close()
        server.kill()


def request_body(method: str, path: str) -> dict[str, Any] | None:
    if method != "POST":
        return None
    return BODY if path != "/jobs" else {k: v for k, v in BODY.items() if k in ("model", "prompt")}


def calls_per_key(template: str) -> int:
    """The calls ``check_cell`` makes for one key: one per tenant's job where the route takes a job id, else one."""
    return len(TENANTS) if "{job_id}" in template else 1


def check_cell(tenants: Tenants, method: str, template: str, key: str) -> int:
    """Call one route as ``key`` with each job id it can take; assert no other tenant's id shows. Returns the calls
    checked."""
    own = tenants.jobs.get(key)
    foreign = [job_id for k, job_id in tenants.jobs.items() if k != key]
    cells = 0
    for job_id in [*tenants.jobs.values()] if "{job_id}" in template else [UNKNOWN_JOB]:
        path = fill(template, {"job_id": job_id, "worker_id": "w1", "model": "llama3"})
        answer = tenants.call(method, path, key, json=request_body(method, path))
        assert answer.status_code < 500, (method, path, answer.text)
        if job_id in foreign:  # another tenant's job: the answer for a job that does not exist (or a 403)
            unknown = tenants.call(
                method, path.replace(job_id, UNKNOWN_JOB), key, json=request_body(method, path)
            )
            assert answer.status_code == unknown.status_code in (403, 404), (method, path, answer.text)
            assert answer.text.replace(job_id, UNKNOWN_JOB) == unknown.text
        else:
            leaked = [other for other in foreign if other in answer.text]
            assert not leaked, (method, path, key[:12], answer.text[:500])
        if own is not None and method == "GET" and path in LISTINGS:
            assert own in answer.text, (method, path, answer.text[:500])
        cells += 1
    return cells


@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_no_route_shows_another_tenants_jobs(tenants: Tenants, method: str, template: str) -> None:
    for key in CALLERS:
        assert check_cell(tenants, method, template, key) == calls_per_key(template)


def test_matrix_size(record_property: Any) -> None:
    """The walk covers the whole route table with each caller (computed from the table, not counted by the walk's
    own tests: it holds whichever tests ran before, or none)."""
    templates = {template for _method, template in ROUTES}
    assert {*LISTINGS, "/jobs/{job_id}", "/jobs/{job_id}/events", "/v1/chat/completions"} <= templates
    cells = sum(len(CALLERS) * calls_per_key(template) for _method, template in ROUTES)
    record_property("tenancy_matrix_cells", cells)
    print(
        f"\ntenancy matrix: {len(ROUTES)} routes x {len(CALLERS)} keys (2 tenants' submit keys, a read key) = "
        f"{cells} calls checked"
    )
    assert len(ROUTES) >= 30 and cells > len(CALLERS) * len(ROUTES)  # job id routes: once per tenant's job


def test_admin_sees_every_tenants_jobs(tenants: Tenants) -> None:
    for path in LISTINGS:
        answer = tenants.call("GET", path, ADMIN)
        assert all(job_id in answer.text for job_id in tenants.jobs.values()), (path, answer.text[:500])
    for job_id in tenants.jobs.values():
        assert tenants.call("GET", f"/jobs/{job_id}", ADMIN).status_code == 200


def test_a_tenant_sees_the_fleets_counts(tenants: Tenants) -> None:
    (worker,) = tenants.call("GET", "/workers", ALICE).json()["workers"]
    assert worker["running"] == [tenants.jobs[ALICE]] and worker["slots_busy"] == 2
    (worker,) = tenants.call("GET", "/workers", READER).json()["workers"]
    assert worker["running"] == [] and worker["slots_busy"] == 2
    data = tenants.call("GET", "/dashboard/data", BOB).json()
    assert [job["id"] for job in data["jobs"]] == [tenants.jobs[BOB]]
    assert data["stats"]["submitted"] >= 2


NAMING_ANOTHER = [
    ("/jobs", {**WAITING, "submitter": "victim"}, {}),
    ("/jobs", {**WAITING, "user": "victim"}, {}),
    ("/jobs", WAITING, {"X-Corral-User": "victim"}),
    ("/jobs", {**WAITING, "stream": True}, {"X-Corral-User": "victim"}),
    ("/jobs/batch", {"jobs": [WAITING, {**WAITING, "submitter": "victim"}]}, {}),
    ("/api/generate", {"model": "llama3", "prompt": "x"}, {"X-Corral-User": "victim"}),
    ("/api/chat", {"model": "llama3", "messages": [{"role": "user", "content": "x"}]}, {"X-Corral-User": "victim"}),
    ("/v1/chat/completions", {"model": "llama3", "messages": [{"role": "user", "content": "x"}]},
     {"X-Corral-User": "victim"}),
    ("/v1/completions", {"model": "llama3", "prompt": "x"}, {"X-Corral-User": "victim"}),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "headers"), NAMING_ANOTHER)
def test_a_submit_key_may_not_name_another_submitter(
    tenants: Tenants, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    before = snapshot(tenants.redis)
    answer = tenants.call("POST", path, ALICE, json=body, headers=headers)
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert "submitter" in (error["message"] if isinstance(error, dict) else error)
    assert snapshot(tenants.redis) == before


def test_a_submit_key_may_name_itself_and_an_admin_anyone(tenants: Tenants) -> None:
    alice_id = key_id(hash_key(ALICE))
    mine = tenants.call("POST", "/jobs", ALICE, json=WAITING, headers={"X-Corral-User": alice_id}).json()
    named = tenants.call("POST", "/jobs", ADMIN, json={**WAITING, "submitter": "victim"}).json()
    submitters = [tenants.redis.hget(f"rq:job:{job['id']}", "submitter") for job in (mine, named)]
    assert submitters == [alice_id.encode(), b"victim"]
    for job, key in ((mine, ALICE), (named, ADMIN)):
        tenants.call("DELETE", f"/jobs/{job['id']}", key)
