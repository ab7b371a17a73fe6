"""The job history: which jobs ran where, how long they queued, time to first token, tokens/s, attempts, errors.

Every enqueue adds the job to the zset ``corral:history`` (scored by creation time, trimmed there by age
``CORRAL_HISTORY_TTL`` and count ``CORRAL_HISTORY_MAX``). A listing walks the zset newest first and reads each
job's hash (one pipelined ``HMGET`` per batch) to filter by status, model and worker. A page ends after ``limit``
matches or ``SCAN_BUDGET`` entries read; its ``next_cursor`` (``<score>:<id>`` of the last entry read) continues
from there, so pages neither skip nor repeat a job while new ones arrive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from corral.common import keys, stored
from corral.common.errors import InvalidRequest
from corral.common.jobs import RQ_TIME_FORMAT
from corral.common.names import JOB_ID_RE, WORKER_ID_RE, normalise_model
from corral.common.schemas import RQ_TO_STATUS

BATCH = 200
SCAN_BUDGET = 5000  # entries read per page at most, whatever the filters
FIELDS = ("status", "model", "kind", "worker_name", "attempt", "created_at", "enqueued_at", "started_at",
          "ended_at", "error", "metrics", "owner")  # fmt: skip


@dataclass(frozen=True)
class Filters:
    status: str | None = None  # Corral's word: queued, running, succeeded, failed, cancelled
    model: str | None = None
    worker: str | None = None
    since: float | None = None  # epoch seconds
    owner: str | None = None  # only this API key's jobs (tenancy); None: everyone's (admin, or no keys)

    def match(self, view: dict[str, Any]) -> bool:
        return (
            (self.owner is None or view["owner"] == self.owner)
            and (self.status is None or view["status"] == self.status)
            and (self.model is None or view["model"] == self.model)
            and (self.worker is None or view["worker"] == self.worker)
        )


def parse_since(value: str) -> float:
    """Epoch seconds or an ISO 8601 time (``Z`` or an offset; naive means UTC)."""
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number) and number >= 0:
            return number
        raise InvalidRequest("since must be a time: epoch seconds or ISO 8601")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"since must be epoch seconds or ISO 8601, not {value[:64]!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def make_filters(status: str | None, model: str | None, worker: str | None, since: str | None) -> Filters:
    """Validated filters; bad input raises ``InvalidRequest`` (400) before anything is read."""
    if model is not None:
        model = normalise_model(model)
    if worker is not None and not WORKER_ID_RE.fullmatch(worker):
        raise InvalidRequest("worker must be a worker id (letters, digits, ._@-)")
    return Filters(status, model, worker, parse_since(since) if since else None)


def parse_cursor(cursor: str) -> tuple[float, str]:
    score, sep, job_id = cursor.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not sep or not math.isfinite(value) or not JOB_ID_RE.fullmatch(job_id):
        raise InvalidRequest("cursor is not one this API gave (use next_cursor of the previous page)")
    return value, job_id


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return (
            datetime.strptime(value.rstrip("Z"), RQ_TIME_FORMAT.rstrip("Z")).replace(tzinfo=UTC).timestamp()
        )
    except ValueError:
        return None


def _iso(value: str | None) -> str | None:
    return None if not value else value if value.endswith("Z") else value + "Z"


def history_entry(job_id: str, values: list[Any]) -> dict[str, Any] | None:
    """One job as the history shows it, from its HMGET ``FIELDS``; None when the hash has expired."""
    h = dict(zip(FIELDS, map(stored.text, values), strict=True))
    if h["status"] is None:
        return None
    metrics = stored.json_object(h["metrics"]) or {}  # damaged: no metrics rather than no history
    status = RQ_TO_STATUS.get(h["status"], "failed")
    started, enqueued = _seconds(h["started_at"]), _seconds(h["enqueued_at"])
    ended = _seconds(h["ended_at"])
    return {
        "id": job_id,
        "status": status,
        "model": h["model"] or "",
        "kind": h["kind"] or "generate",
        "worker": h["worker_name"] or None,
        "attempt": stored.integer(h["attempt"], 1),
        "created_at": _iso(h["created_at"]),
        "started_at": _iso(h["started_at"]) if status != "queued" else None,
        "ended_at": _iso(h["ended_at"]),
        "queued_s": round(started - enqueued, 4) if started and enqueued and status != "queued" else None,
        "run_s": round(ended - started, 4) if ended and started else None,
        "ttft_s": metrics.get("ttft"),
        "eval_count": metrics.get("eval_count"),
        "tokens_per_s": metrics.get("tokens_per_s"),
        "error": h["error"] or None,
        "owner": h["owner"] or "",
    }


async def list_history(
    client: Any, filters: Filters, limit: int, cursor: tuple[float, str] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the history, newest first, and the cursor of the next page (None at the end)."""
    top: Any = cursor[0] if cursor else "+inf"
    bottom: Any = filters.since if filters.since is not None else "-inf"
    out: list[dict[str, Any]] = []
    read, last = 0, None
    while read < SCAN_BUDGET:
        entries = await client.zrevrangebyscore(
            keys.HISTORY, top, bottom, start=0, num=BATCH, withscores=True
        )
        fresh = [
            (m.decode(), s) for m, s in entries if not (cursor and s == cursor[0] and m.decode() >= cursor[1])
        ]
        if not fresh:
            return out, None
        pipe = client.pipeline(transaction=False)
        for job_id, _ in fresh:
            pipe.hmget(keys.job_key(job_id), *FIELDS)
        for (job_id, score), values in zip(fresh, await pipe.execute(), strict=True):
            read, last = read + 1, (score, job_id)
            entry = history_entry(job_id, values)
            if entry is not None and filters.match(entry):
                out.append(entry)
                if len(out) == limit:
                    return out, f"{score!r}:{job_id}"
        assert last is not None
        cursor, top = last, last[0]
    return out, f"{last[0]!r}:{last[1]}" if last else None
