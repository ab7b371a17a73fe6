"""What the two HTTP clients share, with no I/O of their own: a job's request body, the API's error answers turned
into Corral's exceptions, and resuming an event stream where it broke."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx

from corral.common.errors import (
    BackendUnavailable,
    CorralError,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    ModelNotFound,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    Unauthorized,
    WorkerNotFound,
)

NDJSON = {"Accept": "application/x-ndjson"}
STREAM_TIMEOUT = httpx.Timeout(30, read=None)  # a job may be silent for long (queued, loading its model)
BATCH_SIZE = 1000  # jobs per POST /jobs/batch (the API's CORRAL_MAX_BATCH default)
RECONNECTS = 10  # failed connections in a row before an event stream is given up
SUBMIT_ATTEMPTS = 4  # tries of one submit (a lost connection, a 503), all with the same Idempotency-Key

# the API's error ``code`` -> the exception it stands for
CODES: dict[str, type[CorralError]] = {
    kind.code: kind
    for kind in (
        InvalidRequest,
        PayloadTooLarge,
        IdempotencyConflict,
        ModelNotFound,
        QueueFull,
        JobNotFound,
        JobNotCancellable,
        WorkerNotFound,
        BackendUnavailable,
        Unauthorized,
        Forbidden,
        RateLimited,
    )
}
CODES |= {"invalid_json": InvalidRequest, "redis_unavailable": BackendUnavailable}
STATUSES: dict[int, type[CorralError]] = {
    401: Unauthorized,
    403: Forbidden,
    409: JobNotCancellable,
    413: PayloadTooLarge,
    429: RateLimited,
}


def job_body(
    model: str, prompt: str | None, messages: list[dict[str, Any]] | None, **options: Any
) -> dict[str, Any]:
    """A ``POST /jobs`` body."""
    body: dict[str, Any] = {"model": model, **options}
    if prompt is not None:
        body["prompt"] = prompt
    if messages is not None:
        body["messages"] = messages
    return body


def _answer(response: httpx.Response) -> tuple[str, str]:
    """The error message and code of an answer (a proxy in front of the API may answer in plain text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text, ""
    if not isinstance(body, dict):
        return response.text, ""
    return str(body.get("error")), str(body.get("code") or "")


def _kind_of(status: int, code: str, job_id: str | None) -> type[CorralError]:
    if code in CODES:
        return CODES[code]
    if status in STATUSES:
        return STATUSES[status]
    if status == 404 and job_id is not None:
        return JobNotFound
    return BackendUnavailable if status >= 500 else InvalidRequest


def api_error(response: httpx.Response, job_id: str | None = None) -> CorralError:
    """The exception an API error answer stands for, with the API's message verbatim and its context as
    attributes (``status``; ``job_id``, ``model`` or ``retry_after`` where the answer tells them)."""
    message, code = _answer(response)
    kind = _kind_of(response.status_code, code, job_id)
    context: dict[str, Any] = {"status": response.status_code}
    if kind is JobNotFound and job_id is not None:
        context["job_id"] = job_id
    if kind is ModelNotFound:
        context["model"] = message.split("'")[1] if message.count("'") >= 2 else message
    if response.status_code == 429:
        retry = response.headers.get("retry-after", "1")
        context["retry_after"] = float(retry) if retry.isdigit() else 1.0
    # not the subclass constructors: they compose a message of their own from context the answer holds only as text
    error = kind.__new__(kind)
    CorralError.__init__(error, message, **context)
    for name, value in context.items():
        setattr(error, name, value)
    return error


def raise_for(response: httpx.Response, job_id: str | None = None) -> None:
    """Raise the exception of an API error answer (``job_id``: the job a 404 is about); nothing for a success."""
    if response.status_code >= 400:
        raise api_error(response, job_id)


@contextlib.contextmanager
def api_reached() -> Iterator[None]:
    """An API that cannot be reached (refused, reset, timed out) raises ``BackendUnavailable``."""
    try:
        yield
    except httpx.TransportError as exc:
        raise unreachable(exc) from exc


def unreachable(exc: httpx.TransportError) -> BackendUnavailable:
    """``the API is unavailable at http://host:port (reason)``: the address tried, without any path or query."""
    try:
        url = exc.request.url
        where = f" at {url.scheme}://{url.netloc.decode()}"
    except RuntimeError:  # an error raised without its request
        where = ""
    return BackendUnavailable(f"the API is unavailable{where} ({exc or type(exc).__name__})")


class Resume:
    """Where a job's event stream is: the ``seq`` to ask for after a dropped connection, and how many
    connections in a row have failed."""

    def __init__(self, job_id: str, start: int) -> None:
        self.job_id = job_id
        self.next_seq = start
        self.failures = 0

    @property
    def params(self) -> dict[str, int]:
        return {"from": self.next_seq}

    def take(self, line: str) -> dict[str, Any] | None:
        """The event of an NDJSON line (None for a blank one)."""
        if not line:
            return None
        event: dict[str, Any] = json.loads(line)
        self.next_seq, self.failures = event["seq"] + 1, 0
        return event

    def broke(self, exc: httpx.TransportError) -> float:
        """Count a dropped connection; the seconds to wait before the next, or ``BackendUnavailable``."""
        self.failures += 1
        if self.failures >= RECONNECTS:
            raise BackendUnavailable(
                f"lost the event stream of job {self.job_id}", job_id=self.job_id
            ) from exc
        return min(0.1 * 2.0**self.failures, 2.0)


class SubmitRetry:
    """The attempts of one submit: every one sends the same ``Idempotency-Key`` (``headers``), so a retry after a
    lost reply gets the job the first attempt queued instead of a second one. A transport error or a 503 is tried
    again, after ``pause`` seconds, up to ``SUBMIT_ATTEMPTS`` tries in all."""

    def __init__(self, key: str | None = None) -> None:
        self.headers = {"Idempotency-Key": key or secrets.token_hex(16)}
        self.failures = 0
        self.pause = 0.0

    def answer(self, outcome: httpx.Response | httpx.TransportError) -> httpx.Response | None:
        """The answer that stands (its errors raised: ``raise_for``), or None to try again after ``pause``."""
        if isinstance(outcome, httpx.Response) and outcome.status_code != 503:
            raise_for(outcome)
            return outcome
        self.failures += 1
        if self.failures >= SUBMIT_ATTEMPTS:
            if isinstance(outcome, httpx.TransportError):
                raise unreachable(outcome) from outcome
            raise_for(outcome)
        self.pause = min(0.1 * 2.0**self.failures, 2.0)
        return None
