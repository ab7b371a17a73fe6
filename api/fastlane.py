"""The submit paths' fast lane, from one registration per route.

``FastRouter.fast_post(path)`` registers a handler taking the request alone once, as an ordinary FastAPI route
(its OpenAPI entry, and the route any request that goes down the stack reaches) and as an entry of the router's
``fast_routes``, which ``FastLane`` serves ahead of the stack. A ``POST`` to one of those paths goes straight to
its handler, past Starlette's exception middleware, FastAPI's exit-stack middleware and the router: each an ASGI
layer of its own on every request, together more CPU than the rest of a submit. The handler being the same
function on both paths, with no dependency for FastAPI to solve, both paths answer alike
(tests/api/test_fastlane.py checks it, errors included).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class FastRouter(APIRouter):
    """An ``APIRouter`` whose ``fast_post`` routes are also served by the fast lane."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_routes: dict[str, Handler] = {}

    def fast_post(self, path: str, **openapi: Any) -> Callable[[Handler], Handler]:
        """Register ``POST path`` once for both lanes; ``openapi`` (``status_code``, ``responses``, …) documents it.

        The handler takes the request as its one parameter: a dependency would be solved on FastAPI's path and
        not on the fast one."""

        def register(handler: Handler) -> Handler:
            parameters = list(inspect.signature(handler, eval_str=True).parameters.values())
            if len(parameters) != 1 or parameters[0].annotation is not Request:
                raise TypeError(f"{handler.__name__}: a fast-lane handler takes one parameter, the Request")
            self.add_api_route(path, handler, methods=["POST"], **openapi)
            self.fast_routes[self.prefix + path] = handler
            return handler

        return register


def fast_routes(routers: Iterable[APIRouter]) -> dict[str, Handler]:
    """Path → handler of every ``fast_post`` route of ``routers`` (included in the app without a prefix)."""
    return {
        path: handler
        for router in routers
        if isinstance(router, FastRouter)
        for path, handler in router.fast_routes.items()
    }


class FastLane:
    """ASGI middleware: a ``POST`` to one of ``routes`` goes straight to its handler; anything else (these paths'
    other methods included) goes down the stack. An exception raised before the response starts gets the app's
    handler for it, as the router's wrapper would give it; a handler-less one goes up to the server-error
    middleware."""

    def __init__(self, app: ASGIApp, routes: dict[str, Handler], handlers: dict[Any, Any]) -> None:
        self.app = app
        self.routes = routes
        self.handlers = handlers  # the app's own dict: handlers installed later are seen too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            on_error = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
            if on_error is None:
                raise
            response = await on_error(request, exc)
        await response(scope, receive, send)
