"""Request limits: ASGI middleware refusing bodies over ``CORRAL_MAX_BODY_BYTES`` with 413 before they are read,
and the HTTP protocol ``corral api`` serves with, which bounds request heads (431) and slow clients (408, close)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corral.common.settings import Settings

from .errors import shaped_error

log = logging.getLogger("corral.api")


class BodyTooLarge(Exception):
    """Internal control flow, not a ``CorralError``: raised from ``receive`` to unwind the app when a chunked body
    passes the limit, and caught by ``BodyLimit`` itself, which answers 413 in the shape of the path's API. As a
    ``CorralError`` the app's handlers (and the drop-in routes' own) would answer it first, in Corral's shape."""


def left(scope: Scope) -> None:
    """A client that closed its connection before its body arrived: nothing to answer, one line to log."""
    client = scope.get("client") or ("?", 0)
    log.info("%s:%s disconnected before its request body arrived: %s %s",
             client[0], client[1], scope.get("method"), scope.get("path"))  # fmt: skip


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
            try:
                await self.app(scope, receive, send)
            except ClientDisconnect:
                left(scope)
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
        except ClientDisconnect:
            left(scope)

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


@dataclass(frozen=True)
class TransportLimits:
    """What ``corral api`` allows a client on one connection: the request head's size, header count and time to
    arrive, and how long a request body may stall."""

    max_header_bytes: int
    max_headers: int
    head_timeout: float
    body_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> TransportLimits:
        return cls(
            settings.max_header_bytes, settings.max_headers, settings.head_timeout, settings.body_timeout
        )


def guarded_http(limits: TransportLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with ``limits`` (uvicorn's ``http=`` accepts a protocol class)."""
    return type("GuardedHttp", (GuardedHttp,), {"limits": limits})


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with the limits it lacks: a head over ``max_header_bytes`` or with more than
    ``max_headers`` headers gets 431; a head not complete ``head_timeout`` seconds after the connection opened or
    the request began closes the connection; a body that stalls ``body_timeout`` seconds gets 408 and the
    connection closes. Timers are armed only when a head or body spans reads: a request that arrives in one read
    costs none."""

    limits: TransportLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_done = False  # False from the end of a request to the end of the next one's head
        self.in_head = False  # from a request's first byte to the end of its head
        self.in_body = False
        self.head_bytes = 0  # read while the head was not done: bounds a head that never ends
        self.head_parsed = 0  # request line and complete headers
        self.refusal: tuple[int, str, str] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.progress = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timer = self.loop.call_later(self.limits.head_timeout, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:
            return
        if not self.head_done:
            self.head_bytes += len(data)
        self.progress = self.loop.time()
        super().data_received(data)
        if self.refusal is None and self.in_head and self.head_bytes > self.limits.max_header_bytes:
            self.refusal = (431, "request headers over the limit", "headers_too_large")
        if self.refusal is not None:
            self._refuse(*self.refusal)
        elif (self.in_body or self.in_head) and self.timer is None and not self.transport.is_closing():
            timeout = self.limits.head_timeout if self.in_head else self.limits.body_timeout
            self.timer = self.loop.call_later(timeout, self._expired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.head_parsed = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._check_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._check_head(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self.head_done, self.in_head, self.head_bytes = True, False, 0
        self._disarm()
        if self.refusal is None:
            self.in_body = True
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self.head_done, self.in_body, self.head_bytes = False, False, 0
        self._disarm()
        if self.refusal is None:
            super().on_message_complete()

    def _check_head(self, size: int) -> None:
        self.head_parsed += size
        if len(self.headers) > self.limits.max_headers:
            self.refusal = (431, f"more than {self.limits.max_headers} request headers", "headers_too_large")
        elif self.head_parsed > self.limits.max_header_bytes:
            self.refusal = (431, "request headers over the limit", "headers_too_large")

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.transport.is_closing() or self.refusal is not None:
            return
        if not self.head_done:
            if self.in_head or self.cycle is None:  # a head begun, or nothing yet on a new connection
                self.logger.debug("closing a connection whose request head did not arrive in time")
                self.transport.close()
            return
        if not self.in_body or self.cycle.response_started:
            return  # the body is done, or the app answered without reading it: not a slow client
        idle = self.loop.time() - self.progress
        if self.flow.read_paused or idle < self.limits.body_timeout:
            # the app has not read what arrived, or the body moved since the timer was armed
            self.timer = self.loop.call_later(self.limits.body_timeout - idle, self._expired)
            return
        self.logger.debug("closing a connection whose request body stalled")
        self._refuse(408, "request body not received in time", "request_timeout")

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` in the shape of the path's API and close the connection."""
        self._disarm()
        path = getattr(self, "url", b"").split(b"?", 1)[0].decode("latin-1")
        raw = shaped_error(path, status, message, code).body
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(raw), raw)
        )
        self.transport.close()
