"""Corral's exceptions. One root; each carries its context as attributes.

CorralError                 the root; raised as itself for a setup that cannot work (a public bind without keys)
├── InvalidRequest          bad input (400)
│   ├── InvalidFields       fields that fail validation, each error with its location (422)
│   ├── PayloadTooLarge     prompt or body over its limit (413)
│   └── IdempotencyConflict an Idempotency-Key used before with another body (422)
├── ModelNotFound           no live worker has the model (404)
├── JobNotFound             unknown or expired job id (404)
├── QueueFull               the model's queue holds CORRAL_MAX_QUEUE jobs (429; Ollama routes: 503)
├── Unauthorized            no API key, or an unknown one (401)
├── Forbidden               the key's scope is too small for the route (403)
├── RateLimited             the key's request rate or concurrent-job quota is used up (429 + Retry-After)
├── JobNotCancellable       the job has already ended (409)
├── WorkerNotFound          no such live worker (404)
│   └── HostNotFound        no registered host of that name (404)
├── JobTimeout              a client's ``result(timeout=)`` ran out (also a ``TimeoutError``)
├── BackendUnavailable      Redis, the API or an engine cannot be reached (503)
│   ├── NotReplicated       a job was queued but not on CORRAL_ACK_REPLICAS replicas in time (503)
│   └── BackendAuthRefused          the engine refused the worker's credentials  (corral.worker.backends.errors)
├── BackendError                    the engine refused a request                 (corral.worker.backends.errors)
│   └── BackendModelMissing         the engine does not have the model           (corral.worker.backends.errors)
├── BatchError                      a bad line in ``corral submit --file``       (corral.cli.jobs)
└── StartFailed                     ``corral up`` / ``api`` could not start a part (corral.cli.stack)

``corral.api.errors`` maps each to its HTTP status, in one place.

Outside the tree, internal control flow that no caller sees: ``corral.api.limits.BodyTooLarge`` unwinds the app
when a chunked body passes the limit, to be caught by the middleware that raised it (as a ``CorralError`` the
app's handlers would answer it first, in the wrong shape); ``corral.api.bus`` raises redis-py's
``ConnectionError`` when its pub/sub connection closes, to take the path every lost connection takes. In the
worker, ``corral.worker.http.TransportError`` (a broken engine connection, turned into ``BackendUnavailable``
where it leaves the backend) and ``corral.worker.emitter``'s ``Fenced`` and ``Cancelled`` (a job taken away or
cancelled, ending its task).
"""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """Root of every error Corral raises on purpose."""

    code = "corral_error"

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.context.items())
        return f"{type(self).__name__}({self.message!r}{extra})"


class InvalidRequest(CorralError):
    code = "invalid_request"


class InvalidFields(InvalidRequest):
    """Fields that fail validation; ``errors`` as pydantic reports them, each ``loc`` led by where the field is
    (``body``, ``query``, …)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid request: " + _describe(errors), errors=errors)
        self.errors = errors


def _describe(errors: list[dict[str, Any]]) -> str:
    """The first five errors, ``field.path: message`` each."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())[1:]) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


class IdempotencyConflict(InvalidRequest):
    code = "idempotency_conflict"


class ModelNotFound(CorralError):
    code = "model_not_found"

    def __init__(self, model: str, index: int | None = None) -> None:
        where = "" if index is None else f"jobs[{index}]: "
        super().__init__(f"{where}model '{model}' not found", model=model)
        self.model = model


class QueueFull(CorralError):
    code = "queue_full"

    def __init__(self, model: str, depth: int) -> None:
        super().__init__(f"queue of model '{model}' is full ({depth} jobs waiting); retry later", model=model)
        self.model = model


class JobNotFound(CorralError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job '{job_id}' not found", job_id=job_id)
        self.job_id = job_id


class JobNotCancellable(CorralError):
    code = "job_not_cancellable"


class WorkerNotFound(CorralError):
    code = "worker_not_found"


class HostNotFound(WorkerNotFound):
    code = "host_not_found"


class JobTimeout(CorralError, TimeoutError):
    code = "job_timeout"


class BackendUnavailable(CorralError):
    code = "backend_unavailable"


class NotReplicated(BackendUnavailable):
    """A submit's jobs were written to the primary, but fewer replicas than ``CORRAL_ACK_REPLICAS`` acknowledged
    them within ``CORRAL_ACK_TIMEOUT_MS``: a failover now could lose them."""

    code = "not_replicated"

    def __init__(self, job_ids: list[str], replicas: int, wanted: int) -> None:
        super().__init__(
            f"job {', '.join(job_ids)} queued but held by {replicas} of {wanted} replicas in time; it may be lost "
            "on a failover: check GET /jobs/{id}, or submit again with the same Idempotency-Key",
            job_ids=job_ids,
            replicas=replicas,
        )
        self.job_ids = job_ids
        self.replicas = replicas


class Unauthorized(CorralError):
    code = "unauthorized"


class Forbidden(CorralError):
    code = "forbidden"


class RateLimited(CorralError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float, **context: object) -> None:
        super().__init__(message, retry_after=retry_after, **context)
        self.retry_after = retry_after
