"""What the job scripts and a replay read answer, decoded for the stores (common/store.py)."""

from __future__ import annotations

from typing import Any

from . import jsonfast
from .errors import JobNotCancellable, JobNotFound


def parse_events(entries: list[Any]) -> list[dict[str, Any]]:
    """XRANGE entries → event dicts, in order."""
    out = []
    for _id, fields in entries:
        raw = fields.get(b"e") or fields.get("e")
        out.append(jsonfast.loads(raw))
    return out


def word(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def cancel_outcome(job_id: str, reply: list[Any]) -> str:
    state = word(reply[0])
    if state == "missing":
        raise JobNotFound(job_id)
    if state in ("cancelled", "cancelling"):
        return state
    raise JobNotCancellable(f"job '{job_id}' has already ended ({state})", job_id=job_id, state=state)


def requeue_outcome(reply: list[Any]) -> tuple[str, int]:
    return word(reply[0]), int(reply[1]) if len(reply) > 1 else 0
