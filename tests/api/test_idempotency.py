"""``Idempotency-Key`` on the submit routes, in-process: the same key from the same API key answers the first
submit's job (nothing written), another body with it is refused (422), another API key's same key is its own,
and a malformed key is a 400."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.jobs import Idempotency
from corral.common.schemas import JobRequest
from corral.common.settings import Settings

from ..inprocess import API_KEYS, KEYS, InProcessAPI, snapshot
from ..support import free_port

pytestmark = pytest.mark.integration
JOB = {"model": "llama3", "prompt": "hi", "wait": True}  # wait: queued without a live worker


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessAPI, redis.Redis]]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("idem") / "redis").start()
    client = redis.Redis.from_url(server.url)
    app = InProcessAPI(Settings(redis_url=server.url, api_keys=API_KEYS, rate_limit=0,  # type: ignore[arg-type]
                                janitor_interval=3600, idempotency_ttl=600))  # fmt: skip
    yield app, client
    app.close()
    client.close()
    server.kill()


def post(app: InProcessAPI, path: str, body: dict[str, Any], key: str | bytes, scope: str = "submit") -> Any:
    headers = {"Authorization": f"Bearer {KEYS[scope]}", "Idempotency-Key": key}
    return app.request("POST", path, json=body, headers=headers)


def jobs_in(r: redis.Redis) -> int:
    return len(r.keys(keys.job_key("*")))


def test_the_same_key_answers_the_first_job_and_another_body_is_refused(
    api: tuple[InProcessAPI, redis.Redis],
) -> None:
    app, r = api
    key, count = str(uuid.uuid4()), jobs_in(r)
    first = post(app, "/jobs", JOB, key)
    assert first.status_code == 202, first.text
    again = post(app, "/jobs", JOB, key)
    assert again.status_code == 202 and again.json() == first.json()
    assert jobs_in(r) == count + 1
    before = snapshot(r)
    other = post(app, "/jobs", {**JOB, "prompt": "bye"}, key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_conflict"
    assert snapshot(r) == before
    # another API key's same Idempotency-Key is its own: a new job
    admin = post(app, "/jobs", JOB, key, scope="admin")
    assert admin.status_code == 202 and admin.json()["id"] != first.json()["id"]
    assert jobs_in(r) == count + 2
    # without the header, every submit is a job of its own
    plain = app.request("POST", "/jobs", json=JOB, headers={"Authorization": f"Bearer {KEYS['submit']}"})
    assert plain.status_code == 202 and jobs_in(r) == count + 3


def test_a_batch_with_the_same_key_answers_its_first_jobs(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, r = api
    key, count = str(uuid.uuid4()), jobs_in(r)
    batch = {"jobs": [JOB, {**JOB, "prompt": "two"}]}
    first = post(app, "/jobs/batch", batch, key)
    assert first.status_code == 202, first.text
    assert post(app, "/jobs/batch", batch, key).json() == first.json()
    assert jobs_in(r) == count + 2
    refused = post(app, "/jobs/batch", {"jobs": [JOB]}, key)
    assert refused.status_code == 422 and jobs_in(r) == count + 2
    (record,) = r.keys(keys.idempotency_key("*", key))  # the owner: the submit key's id
    assert 590 < r.ttl(record) <= 600


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch", "/api/generate", "/v1/completions"])
@pytest.mark.parametrize("key", ["", "two words", "x" * 256, "tab\there", "é".encode()])
def test_a_malformed_key_is_a_400(api: tuple[InProcessAPI, redis.Redis], path: str, key: str | bytes) -> None:
    app, r = api
    body = {"jobs": [JOB]} if path == "/jobs/batch" else JOB
    before = snapshot(r)
    answer = post(app, path, body, key)
    assert answer.status_code == 400, answer.text
    assert "Idempotency-Key" in answer.text
    assert snapshot(r) == before


def test_the_digest_is_of_the_canonical_request() -> None:
    def of(body: dict[str, Any]) -> str:
        return Idempotency.of("k", [JobRequest.model_validate(body)]).digest

    one = {"model": "llama3", "prompt": "hi", "options": {"temperature": 0.1, "seed": 1}}
    assert of(one) == of(
        {"options": {"seed": 1, "temperature": 0.1}, "prompt": "hi", "model": "llama3:latest"}
    )
    assert of(one) != of({**one, "prompt": "ho"}) and of({**one, "prompt": "\ud800"})
