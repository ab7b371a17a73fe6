from __future__ import annotations

import json
import pickle
import uuid
import zlib
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from corral.common.jobs import (
    RQ_TIME_FORMAT,
    Limits,
    decode_popped,
    event_json,
    job_view,
    new_job_id,
    prepare_job,
    rq_now,
)
from corral.common.schemas import JobRequest

pytestmark = pytest.mark.unit
LIMITS = Limits(events_maxlen=100, events_ttl_ms=1000, result_ttl=60, job_timeout=30, max_retries=2)


def test_prepared_job_is_an_rq_job_with_corral_fields() -> None:
    client = fakeredis.FakeRedis()
    job = prepare_job(JobRequest(model="llama3", prompt="hi", timeout=7), LIMITS)
    client.hset(f"rq:job:{job.id}", mapping=job.mapping)
    fetched = Job.fetch(job.id, connection=client, serializer=JSONSerializer)
    assert fetched.func_name == "corral.generate"
    assert fetched.kwargs["request"]["prompt"] == "hi"
    assert fetched.origin == "ollama:llama3:latest"
    assert fetched.timeout == 7
    assert fetched.get_status() == "queued"
    view = job_view(job.id, client.hgetall(f"rq:job:{job.id}"), position=3)
    assert (view.status, view.attempt, view.queue_position, view.model) == ("queued", 1, 3, "llama3:latest")


def test_event_json_puts_identity_first() -> None:
    text = event_json("abc", 4, 2, {"type": "chunk", "text": 'say "hi"'})
    assert text.startswith('{"job":"abc","seq":4,"attempt":2,"type":"chunk"')
    assert json.loads(text)["text"] == 'say "hi"'


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "caf\u00e9 \u2615"},
        {"prompt": "half a pair: \ud800"},  # a lone surrogate (valid JSON input)
        {"format": {"type": "integer", "maximum": 2**70 + 1}},  # an integer no float holds, in a JSON schema
    ],
)
def test_a_request_reaches_the_worker_as_written(fields: dict[str, object]) -> None:
    request = JobRequest.model_validate({"model": "llama3", "prompt": "hi", **fields})
    job = prepare_job(request, LIMITS)
    popped = decode_popped(_reply(job.mapping["data"].encode()), 600)
    assert popped.refusal is None
    assert popped.kwargs["request"] == request.ollama_body()
    assert repr(popped.kwargs["request"]) == repr(request.ollama_body())  # (an int is not an equal float)


def _reply(data: bytes) -> list[object]:
    return [b"id1", b"1", data, b"30", b"llama3:latest"]


def test_allowed_job_decodes() -> None:
    data = zlib.compress(json.dumps(["corral.chat", None, [], {"request": {"model": "m"}}]).encode())
    popped = decode_popped(_reply(data), 600)
    assert popped.refusal is None and popped.func_name == "corral.chat" and popped.timeout == 30


@pytest.mark.parametrize(
    "data",
    [
        zlib.compress(json.dumps(["os.system", None, ["touch /tmp/pwned"], {}]).encode()),
        zlib.compress(json.dumps(["corral.generate", None, ["positional"], {}]).encode()),
        zlib.compress(pickle.dumps(("os.system", None, ("id",), {}))),
        b"not even zlib",
        zlib.compress(b'{"a": 1}'),
    ],
)
def test_anything_else_is_refused_unread(data: bytes) -> None:
    popped = decode_popped(_reply(data), 600)
    assert popped.refusal and popped.func_name is None


def test_rq_now_is_rq_time_format_and_new_job_ids_are_uuid4_hex() -> None:
    before = datetime.now(UTC)
    stamp = rq_now()
    parsed = datetime.strptime(stamp, RQ_TIME_FORMAT).replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= parsed <= datetime.now(UTC) and len(stamp) == 27
    ids = {new_job_id() for _ in range(2000)}
    assert len(ids) == 2000
    for job_id in ids:
        value = uuid.UUID(hex=job_id)
        assert value.version == 4 and value.variant == uuid.RFC_4122 and value.hex == job_id


def test_a_jobs_times_come_from_one_reading_of_the_clock() -> None:
    job = prepare_job(JobRequest(model="llama3", prompt="hi", queue_timeout=30), LIMITS)
    assert job.mapping["created_at"] == job.mapping["enqueued_at"] == rq_now(job.created)
    assert job.deadline == job.created + 30
    assert rq_now(1796495947.8193429) == "2026-12-05T18:39:07.819342Z"
