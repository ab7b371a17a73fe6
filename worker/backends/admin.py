"""Model management on the engine: Ollama's ``/api/pull``, ``/api/delete``, ``/api/copy``, ``/api/create`` and a
preload (an empty generate with ``keep_alive``). OpenAI-compatible engines have no such API: ``model_admin`` gives
None for them and the worker answers "not supported".

It has its own one-connection pool, so a pull that streams for minutes holds none of the job slots' connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .base import Backend
from .ollama import OllamaBackend, ndjson_chunks
from .pool import HttpPool


class OllamaAdmin:
    """Pull, delete, copy, create and preload on one Ollama server."""

    def __init__(self, backend: OllamaBackend) -> None:
        self.http = HttpPool(backend.http.connection, 0)

    async def close(self) -> None:
        await self.http.close()

    async def pull(self, model: str) -> AsyncIterator[dict[str, Any]]:
        """Ollama's progress lines; an ``{"error"}`` line raises ``BackendError``."""
        async with self.http.stream("/api/pull", {"model": model, "stream": True}) as response:
            async for line in ndjson_chunks(response):
                yield line

    async def create(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with self.http.stream("/api/create", {**body, "stream": True}) as response:
            async for line in ndjson_chunks(response):
                yield line

    async def delete(self, model: str) -> None:
        await self.http.send("DELETE", "/api/delete", {"model": model})

    async def copy(self, source: str, destination: str) -> None:
        await self.http.send("POST", "/api/copy", {"source": source, "destination": destination})

    async def preload(self, model: str, keep_alive: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return dict(await self.http.request("POST", "/api/generate", body))


def model_admin(backend: Backend) -> OllamaAdmin | None:
    """The engine's model management, or None when its API has none (OpenAI-compatible engines)."""
    return OllamaAdmin(backend) if isinstance(backend, OllamaBackend) else None
