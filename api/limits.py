"""ASGI middleware refusing request bodies over ``CORRAL_MAX_BODY_BYTES`` with 413 before they are read."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Internal control flow, not a ``CorralError``: raised from ``receive`` to unwind the app when a chunked body
    passes the limit, and caught by ``BodyLimit`` itself, which answers 413 in the shape of the path's API. As a
    ``CorralError`` the app's handlers (and the drop-in routes' own) would answer it first, in Corral's shape."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._refuse(send, scope.get("path", ""))
                return
            # the server reads exactly Content-Length bytes of body: no need to count them (nor to wrap every
            # message of the response, streamed chunks included)
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, scope.get("path", ""))

    async def _refuse(self, send: Send, path: str) -> None:
        """413 in the error shape of the API the path belongs to (Corral's, Ollama's or OpenAI's)."""
        message = f"request body over the limit of {self.max_bytes} bytes"
        body: dict[str, Any] = {"error": message, "code": "payload_too_large"}
        if path.startswith("/api/"):
            body = {"error": message}
        elif path.startswith("/v1/"):
            body = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
            }
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})
