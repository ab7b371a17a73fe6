"""Reading a job hash's fields as stored, whatever is there: text that is not UTF-8, a count that is not a number,
a result that is not JSON. Corral writes none of these; a damaged or hand-edited hash must still give an answer
(the job with an ``error`` that says what could not be read), never a 500."""

from __future__ import annotations

import json
from typing import Any

RESULT_UNREADABLE = "the stored result of this job is unreadable (not UTF-8 JSON)"


def text(value: bytes | str | None) -> str | None:
    """A field as text; bytes that are not UTF-8 come out with U+FFFD in their place."""
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def integer(value: bytes | str | None, default: int) -> int:
    """A count or a seq; ``default`` when absent or not an integer."""
    try:
        return int(value) if value else default
    except ValueError:
        return default


def json_object(value: bytes | str | None) -> dict[str, Any] | None:
    """A JSON object field (``result``, ``metrics``): ``{}`` when absent, None when it is not a JSON object."""
    if not value:
        return {}
    try:
        data = json.loads(value)  # bytes must be UTF-8 (UnicodeDecodeError is a ValueError)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else {} if data is None else None
