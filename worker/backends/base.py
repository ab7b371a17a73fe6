"""What the worker needs of an engine: the ``Backend`` protocol every backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .pool import Early

Chunks = AsyncIterator[dict[str, Any]]


class Backend(Protocol):
    """The models an engine has and holds in memory, a streamed generation or chat, embeddings, a model's
    description. Models are dicts with at least ``name``; chunks are Ollama-shaped (``response`` or ``message``,
    ``done``; the last one ``done: true`` with what stats are known): Corral's internal format. Leaving a stream's
    ``async with`` block (or cancelling the task) closes the HTTP stream, which stops the engine."""

    url: str
    kind: str

    async def list_models(self) -> list[dict[str, Any]]: ...

    async def loaded_models(self) -> list[dict[str, Any]]: ...

    def send_now(self, kind: str, request: dict[str, Any]) -> Early | None:
        """Write a streamed request at once, from synchronous code, when a kept connection is free (else None):
        ``stream(kind, request, early)`` reads its answer, or ``early.discard()`` drops it."""
        ...

    def stream(
        self, kind: str, request: dict[str, Any], early: Early | None = None
    ) -> AbstractAsyncContextManager[Chunks]: ...

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]: ...

    async def show(self, model: str) -> dict[str, Any]: ...

    async def version(self) -> str | None:
        """The engine's version, when its API tells (Ollama's ``/api/version``; OpenAI's API has none)."""
        ...

    async def close(self) -> None: ...
