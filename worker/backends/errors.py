"""What can go wrong with an engine, as the worker tells it apart: who is to blame decides what becomes of the job.

CorralError                     (corral.common.errors)
├── BackendUnavailable          (corral.common.errors) cannot connect, TLS failure, 5xx, 429, a broken stream: the
│   │                           host is the problem, the job is re-queued for another
│   └── BackendAuthRefused      401/403: the token or headers are wrong (a host problem too)
└── BackendError                the engine refused the request (4xx, an error in the stream): the job fails
    └── BackendModelMissing     404: this host lacks the model, the job is re-queued for another

``ENGINE_ERRORS`` catches all of them.
"""

from __future__ import annotations

from corral.common.errors import BackendUnavailable, CorralError


class BackendError(CorralError):
    """The engine answered the request with an error (``status``: its HTTP status; -1 for an error in a stream)."""

    code = "backend_error"

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message, status=status)
        self.status = status


class BackendModelMissing(BackendError):
    """The engine does not have the model (404)."""

    code = "backend_model_missing"


class BackendAuthRefused(BackendUnavailable):
    """The engine refused the worker's credentials (401/403)."""

    code = "backend_auth_refused"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, status=status)
        self.status = status


ENGINE_ERRORS = (BackendError, BackendUnavailable)

__all__ = ["ENGINE_ERRORS", "BackendAuthRefused", "BackendError", "BackendModelMissing", "BackendUnavailable"]
