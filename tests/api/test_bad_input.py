"""Bad input gets a clear 4xx JSON error and writes nothing to Redis."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import Stack

pytestmark = pytest.mark.integration


def keyset(stack: Stack) -> tuple[set[bytes], dict[bytes, int], set[bytes]]:
    """What a submission could write: job hashes, event streams, queue lengths, the RQ queue set.
    (Worker heartbeats and in-flight lists change on their own and are left out.)"""
    r = stack.redis
    jobs = set(r.scan_iter("rq:job:*", count=1000)) | set(r.scan_iter("corral:events:*", count=1000))
    queues = {key: r.llen(key) for key in r.scan_iter("rq:queue:*", count=1000)}
    return jobs, queues, set(r.smembers("rq:queues"))


def refused(stack: Stack, status: int, content: bytes, path: str = "/jobs") -> dict[str, Any]:
    before = keyset(stack)
    response = stack.http.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"] and body["code"]
    assert keyset(stack) == before
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b"", 400, "missing request body"),
        (b"{not json", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"[1, 2]", 422, "body"),
        (b'{"prompt": "hi"}', 422, "model"),
        (b'{"model": "", "prompt": "hi"}', 422, "model"),
        (b'{"model": "bad name!", "prompt": "hi"}', 422, "invalid model name"),
        (b'{"model": "' + b"x" * 300 + b'", "prompt": "hi"}', 422, "longer than"),
        (b'{"model": "llama3", "prompt": 5}', 422, "prompt"),
        (b'{"model": "llama3", "kind": "chat", "prompt": "x"}', 422, "messages"),
        (b'{"model": "llama3", "kind": "bake"}', 422, "kind"),
        (b'{"model": "llama3", "prompt": "x", "unknown": 1}', 422, "unknown"),
        (b'{"model": "llama3", "messages": [{"role": "wizard", "content": "x"}]}', 422, "role"),
        (b'{"model": "llama3", "prompt": "x", "timeout": -1}', 422, "timeout"),
        (b'{"model": "llama3", "prompt": "x", "timeout": Infinity}', 400, "malformed JSON"),
        (b'{"model": "llama3", "prompt": "x", "options": {"t": NaN}}', 400, "malformed JSON"),
        (b'{"model": "nobody-has-this", "prompt": "hi"}', 404, "model 'nobody-has-this:latest' not found"),
    ],
)
def test_bad_submissions(stack: Stack, content: bytes, status: int, words: str) -> None:
    body = refused(stack, status, content)
    assert words in body["error"], body


def test_prompt_over_limit_is_413(stack: Stack) -> None:
    big = b'{"model": "llama3", "prompt": "' + b"a" * (1_048_576 + 1) + b'"}'
    assert "over the limit" in refused(stack, 413, big)["error"]


def test_body_over_limit_is_413_before_reading(stack: Stack) -> None:
    before = keyset(stack)
    response = stack.http.post("/jobs", content=b"x" * (16 * 1_048_576 + 1))
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert keyset(stack) == before


def test_chunked_body_over_limit_is_413(stack: Stack) -> None:
    """Without a Content-Length (chunked transfer encoding) the body is counted as it arrives."""
    before = keyset(stack)
    response = stack.http.post("/jobs", content=iter([b"x" * 1_048_576] * 17))
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert keyset(stack) == before


@pytest.mark.parametrize("job_id", ["0" * 32, "nope", "../../etc", "f" * 64])
def test_unknown_job_ids_are_404(stack: Stack, job_id: str) -> None:
    for method, path in (("GET", ""), ("GET", "/events"), ("DELETE", "")):
        response = stack.http.request(method, f"/jobs/{job_id}{path}")
        assert response.status_code == 404 and "not found" in response.json()["error"]


def test_bad_resume_positions(stack: Stack) -> None:
    job_id = stack.http.post("/jobs", json={"model": "llama3", "prompt": "x"}).json()["id"]
    bad_header = stack.http.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "abc"})
    assert bad_header.status_code == 400
    assert stack.http.get(f"/jobs/{job_id}/events", params={"from": -1}).status_code == 422


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=40) | json_values,
        "prompt": st.text(max_size=40) | json_values,
        "messages": json_values,
        "kind": st.sampled_from(["generate", "chat", "embed", "x"]) | json_values,
        "input": json_values,
        "options": json_values,
        "timeout": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies | json_values)
def test_fuzzed_submissions_never_5xx(stack: Stack, body: Any) -> None:
    """Any JSON gets 202 or a 4xx; only a 202 may write to Redis."""
    if isinstance(body, dict) and body.get("model") in ("llama3", "llama3:latest"):
        body["model"] = "not-served"  # keep accepted jobs out of the worker's way
    before = keyset(stack)
    response = stack.http.post("/jobs", json=body)
    assert response.status_code < 500, response.text
    if response.status_code == 202:
        stack.http.delete(f"/jobs/{response.json()['id']}")
    else:
        assert 400 <= response.status_code < 500 and isinstance(response.json()["error"], str)
        assert keyset(stack) == before


def test_unroutable_paths_are_json_404(stack: Stack) -> None:
    response = httpx.get(stack.api + "/nope")
    assert response.status_code == 404 and response.json()["error"]
