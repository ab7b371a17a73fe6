"""common.stored and job_view: a damaged job hash still reads (with an ``error``), never raises."""

from __future__ import annotations

import pytest

from corral.common import stored
from corral.common.jobs import job_view

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, {}), (b"", {}), (b"null", {}), (b'{"text":"hi"}', {"text": "hi"}), ('{"a":1}', {"a": 1}),
     (b'{"text":"\xff"}', None), (b"\xff\xfe", None), (b"[1]", None), (b"{", None), (b"5", None),
     (b"[" * 5000 + b"]" * 5000, None)],
)  # fmt: skip
def test_json_object(value: bytes | str | None, expected: object) -> None:
    assert stored.json_object(value) == expected


def test_text_and_integer() -> None:
    assert stored.text(b"a\xffb") == "a\ufffdb" and stored.text("x") == "x" and stored.text(None) is None
    assert stored.integer(b"7", 1) == 7 and stored.integer(b"\xff", 1) == 1 and stored.integer(None, 0) == 0


def test_job_view_of_a_damaged_hash() -> None:
    raw = {b"status": b"finished", b"model": b"m\xff", b"kind": b"bake", b"result": b"\xff", b"attempt": b"x",
           b"seq": b"", b"priority": b"urgent", b"worker_name": b"w\xfe"}  # fmt: skip
    view = job_view("a" * 32, raw)
    assert (view.status, view.model, view.kind, view.attempt, view.events) == (
        "succeeded",
        "m\ufffd",
        "generate",
        1,
        0,
    )
    assert view.priority == "normal" and view.worker == "w\ufffd" and view.text is None
    assert view.error == stored.RESULT_UNREADABLE


def test_job_view_keeps_the_jobs_own_error() -> None:
    view = job_view("a" * 32, {b"status": b"failed", b"error": b"engine said no", b"result": b"\xff"})
    assert view.error == "engine said no" and view.status == "failed"
