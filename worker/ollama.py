"""The worker's client of its local Ollama: model lists and streamed generation over NDJSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from common.errors import CorralError


class OllamaError(CorralError):
    """Ollama answered with an error.

    OllamaError
    ├── OllamaUnavailable   cannot connect, 5xx, 503 busy: the host is the problem, re-queue the job
    ├── OllamaModelMissing  404: this host lacks the model, re-queue for another
    └── (itself)            4xx: the request is the problem, fail the job
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message, status=status)
        self.status = status


class OllamaUnavailable(OllamaError):
    pass


class OllamaModelMissing(OllamaError):
    pass


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except (ValueError, AttributeError):
        return response.text or f"HTTP {response.status_code}"


def raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    response.read()
    message = _error_message(response)
    if response.status_code == 404:
        raise OllamaModelMissing(message, response.status_code)
    if response.status_code >= 500:
        raise OllamaUnavailable(message, response.status_code)
    raise OllamaError(message, response.status_code)


class OllamaClient:
    """Thread-safe: one pooled httpx client shared by the worker's slots."""

    def __init__(self, base_url: str, slots: int, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        limits = httpx.Limits(max_connections=slots + 4, max_keepalive_connections=slots + 4)
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, limits=limits)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> dict[str, Any]:
        try:
            response = self.http.get(path)
        except httpx.HTTPError as exc:
            raise OllamaUnavailable(f"ollama at {self.base_url} unreachable: {exc}") from exc
        raise_for_status(response)
        return response.json()  # type: ignore[no-any-return]

    def list_models(self) -> list[str]:
        """Names of the models on disk (``GET /api/tags``)."""
        return [m["name"] for m in self._get("/api/tags").get("models") or []]

    def loaded_models(self) -> list[str]:
        """Names of the models in memory (``GET /api/ps``)."""
        return [m["name"] for m in self._get("/api/ps").get("models") or []]

    @contextmanager
    def stream(self, path: str, body: dict[str, Any], timeout: float) -> Iterator[httpx.Response]:
        """Open a streamed POST; the caller iterates ``chunks(response)``. Closing it cancels the generation."""
        request = self.http.build_request(
            "POST", path, json=body, timeout=httpx.Timeout(10.0, read=timeout, write=30.0, pool=30.0)
        )
        try:
            response = self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise OllamaUnavailable(f"ollama at {self.base_url} unreachable: {exc}") from exc
        try:
            raise_for_status(response)
            yield response
        finally:
            response.close()

    def post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            response = self.http.post(path, json=body, timeout=httpx.Timeout(10.0, read=timeout))
        except httpx.HTTPError as exc:
            raise OllamaUnavailable(f"ollama at {self.base_url} unreachable: {exc}") from exc
        raise_for_status(response)
        return response.json()  # type: ignore[no-any-return]


def chunk_batches(response: httpx.Response) -> Iterator[list[dict[str, Any]]]:
    """Ollama's NDJSON chunks, grouped by network read: what arrived together is published together
    (one Redis round trip), so a fast model costs fewer round trips and a slow one loses no latency.
    An ``{"error": …}`` line raises after the chunks before it (Ollama ends the stream after it)."""
    buffer = b""
    for data in response.iter_bytes():
        buffer += data
        if b"\n" not in data:
            continue
        *lines, buffer = buffer.split(b"\n")
        batch, error = _parse(lines)
        if batch:
            yield batch
        if error is not None:
            raise error
    batch, error = _parse([buffer])
    if batch:
        yield batch
    if error is not None:
        raise error


def _parse(lines: list[bytes]) -> tuple[list[dict[str, Any]], OllamaError | None]:
    batch: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        chunk = json.loads(line)
        if "error" in chunk:
            return batch, OllamaError(str(chunk["error"]), -1)
        batch.append(chunk)
    return batch, None
