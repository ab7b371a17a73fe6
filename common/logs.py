"""Log lines: ``configure_logging`` (text ``key=value`` or JSON lines, one per record, on stderr) and the job's state
changes, one INFO line each on the ``corral.jobs`` logger (``job_event``).

A job's lines carry ids, names, statuses and timings only: never its prompt, its result or a key. A line's fields
are in ``record.fields``; the text format appends them as ``key=value``, the JSON format as members.

    2026-05-01T12:00:00.123Z INFO corral.jobs: job started job=… model=llama3 worker=gpu-1 attempt=1 queued_ms=4.2
    {"time": "2026-05-01T12:00:00.123Z", "level": "INFO", "logger": "corral.jobs", "msg": "job started", …}
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .jobs import PreparedJob

JOBS = logging.getLogger("corral.jobs")
NOISY = ("httpx", "httpcore")  # httpx logs every request at INFO: a line (and some CPU) per job on a worker
RESERVED = {"time", "level", "logger", "msg", "exc"}
_PLAIN = re.compile(r'[^\x00-\x20"=\\\x7f]+')  # a value written without quotes


class LogSettings(Protocol):
    @property
    def log_level(self) -> str: ...
    @property
    def log_format(self) -> str: ...


def configure_logging(settings: LogSettings) -> None:
    """One handler on the root logger, in the configured format and level (replacing any there was)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def iso_time(created: float) -> str:
    seconds = int(created)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"
    )


def logfmt(value: Any) -> str:
    """A value of a ``key=value`` pair: as is when it has no space, quote, ``=`` or control character, else
    JSON-quoted (logfmt's convention)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_time(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:  # (the event is the message's last word already)
            line += "".join(f" {k}={logfmt(v)}" for k, v in fields.items() if v is not None and k != "event")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            entry.update((k, v) for k, v in fields.items() if v is not None and k not in RESERVED)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def job_event(event: str, job_id: str, level: int = logging.INFO, **fields: Any) -> None:
    """One line for a state change of a job: ``job <event> job=<id> …`` (fields None are left out)."""
    if JOBS.isEnabledFor(level):
        JOBS.log(level, "job %s", event, extra={"fields": {"event": event, "job": job_id, **fields}})


def job_submitted(job: PreparedJob, position: int) -> None:
    """The API queued ``job`` (``position``: jobs ahead of it in its model's queue)."""
    job_event("submitted", job.id, model=job.model, kind=job.kind, priority=job.priority,
              submitter=job.submitter, position=position)  # fmt: skip


def job_requeued(job_id: str, outcome: tuple[str, int], reason: str, **fields: Any) -> None:
    """A warning line for a started job put back in its queue (REQUEUE's ``outcome``: requeued and its next
    attempt), failed past the retry limit (failed and its attempts), ended because its cancel had been asked
    (canceled) or found no longer started (skipped)."""
    state, attempt = outcome
    if state == "requeued":
        job_event("requeued", job_id, logging.WARNING, **fields, next_attempt=attempt, reason=short(reason))
    elif state == "failed":
        job_event("finished", job_id, logging.WARNING, **fields, status="failed", attempts=attempt,
                  reason=short(f"gave up: {reason}"))  # fmt: skip
    elif state == "canceled":
        job_event("finished", job_id, logging.INFO, **fields, status="canceled", reason=short(reason))
    else:
        job_event("requeue_skipped", job_id, logging.INFO, **fields, reason="no longer started")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def short(text: str, limit: int = 200) -> str:
    """An error message cut to ``limit`` characters (a backend's message may be long)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
