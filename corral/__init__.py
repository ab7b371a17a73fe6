"""Corral: a Redis-queue job dispatcher for fleets of Ollama hosts.

    from corral import Client
    with Client("http://127.0.0.1:8000") as corral:
        job = corral.submit("llama3", "why is the sky blue?")
        print(job.result(timeout=60).text)

``AsyncClient`` is the same over asyncio, ``DirectClient`` enqueues straight into Redis; all three return a job
handle of one shape (``id``, ``status()``, ``result(timeout=)``, ``stream()``, ``events()``, ``cancel()``).

Sub-packages: ``corral.api`` (the HTTP API), ``corral.worker`` (a worker beside each engine), ``corral.common``
(what both share), ``corral.client``, ``corral.cli`` (the ``corral`` command), ``corral.simulator``.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.client import AsyncClient, AsyncJob, Client, DirectClient, DirectJob, Job, JobHandle
    from corral.common.errors import (
        BackendUnavailable,
        CorralError,
        Forbidden,
        InvalidRequest,
        JobNotCancellable,
        JobNotFound,
        JobTimeout,
        ModelNotFound,
        PayloadTooLarge,
        QueueFull,
        RateLimited,
        Unauthorized,
        WorkerNotFound,
    )
    from corral.common.schemas import JobRequest, JobView, Submitted
    from corral.common.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "BackendUnavailable",
    "Client",
    "CorralError",
    "DirectClient",
    "DirectJob",
    "Forbidden",
    "InvalidRequest",
    "Job",
    "JobHandle",
    "JobNotCancellable",
    "JobNotFound",
    "JobRequest",
    "JobTimeout",
    "JobView",
    "ModelNotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "Settings",
    "Submitted",
    "Unauthorized",
    "WorkerNotFound",
]

# Each name is imported on first use (PEP 562), not with the package: `corral api`, `corral worker` and the
# simulator are `corral` processes too, and none of them needs the clients (httpx and ~0.1 s of imports).
_HOMES = {
    **dict.fromkeys(
        ("AsyncClient", "AsyncJob", "Client", "DirectClient", "DirectJob", "Job", "JobHandle"),
        "corral.client",
    ),
    **dict.fromkeys(("JobRequest", "JobView", "Submitted"), "corral.common.schemas"),
    "Settings": "corral.common.settings",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES.get(name, "corral.common.errors")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
