"""api.sse: the one Server-Sent Events encoder, byte for byte, for the native event stream and the OpenAI streams."""

from __future__ import annotations

import pytest

from corral.api.routes.jobs import job_event
from corral.api.sse import KEEPALIVE, sse_event

pytestmark = pytest.mark.unit


def test_a_job_event_names_its_seq_and_type() -> None:
    event = {"job": "j1", "seq": 3, "type": "chunk", "text": "héllo\n"}
    assert job_event(event) == (
        b'id: 3\nevent: chunk\ndata: {"job":"j1","seq":3,"type":"chunk","text":"h\xc3\xa9llo\\n"}\n\n'
    )


def test_openai_chunks_are_data_only() -> None:
    assert sse_event({"choices": []}) == b'data: {"choices":[]}\n\n'
    assert sse_event("[DONE]") == b"data: [DONE]\n\n"


def test_a_string_with_line_breaks_takes_a_data_line_per_line() -> None:
    assert sse_event("a\nb\r\nc\rd", event="note") == b"event: note\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


def test_keepalive_is_a_comment() -> None:
    assert KEEPALIVE == b": keepalive\n\n"
