"""Server-Sent Events framing: the one encoder of the native event stream and the OpenAI streams."""

from __future__ import annotations

from typing import Any

from corral.common import jsonfast

KEEPALIVE = b": keepalive\n\n"  # a comment line: it keeps proxies from closing an idle stream


def sse_event(data: Any, event: str | None = None, event_id: int | str | None = None) -> bytes:
    """One event: ``id:`` and ``event:`` lines when given, then ``data:`` (a string as it is, anything else as
    compact JSON; a string with line breaks takes one ``data:`` line per line, as the format requires)."""
    id_line = "" if event_id is None else f"id: {event_id}\n"
    event_line = "" if event is None else f"event: {event}\n"
    if isinstance(data, str):
        if "\n" in data or "\r" in data:
            data = "\ndata: ".join(data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        return f"{id_line}{event_line}data: {data}\n\n".encode()
    # JSON escapes line breaks: one data line
    return f"{id_line}{event_line}data: {jsonfast.dumps(data)}\n\n".encode()
