"""Corral's Python clients, one shape for all three: ``submit`` returns a job handle with ``id``, ``status()``,
``result(timeout=)``, ``stream()``, ``events()`` and ``cancel()`` (see ``corral.client.handles``).

``Client`` and ``AsyncClient`` talk to the API over HTTP (``Job``, ``AsyncJob``); ``DirectClient`` (also
``Client.from_redis(url)``) enqueues straight into Redis, as the workers see it (``DirectJob``).
"""

from .aio import AsyncClient, AsyncJob
from .direct import DirectClient, DirectJob
from .handles import JobHandle
from .http import Client, Job

__all__ = ["AsyncClient", "AsyncJob", "Client", "DirectClient", "DirectJob", "Job", "JobHandle"]
