"""The one place where exceptions become HTTP answers: ``{"error": message, "code": code}``."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.common.connections import TRANSIENT
from corral.common.errors import (
    BackendUnavailable,
    CorralError,
    Forbidden,
    IdempotencyConflict,
    InvalidFields,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    ModelNotFound,
    NotReplicated,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    Unauthorized,
    WorkerNotFound,
)

from .wire import openai_error

STATUS: list[tuple[type[CorralError], int]] = [
    (PayloadTooLarge, 413),
    (InvalidFields, 422),
    (IdempotencyConflict, 422),
    (InvalidRequest, 400),
    (ModelNotFound, 404),
    (JobNotFound, 404),
    (WorkerNotFound, 404),
    (JobNotCancellable, 409),
    (QueueFull, 429),
    (RateLimited, 429),
    (Unauthorized, 401),
    (Forbidden, 403),
    (BackendUnavailable, 503),
]


def status_of(exc: CorralError) -> int:
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


def corral_response(exc: CorralError) -> JSONResponse:
    """Corral's answer to one of its errors: its status, ``{"error", "code"}`` (and each field error's location
    for ``InvalidFields``), ``Retry-After`` on the 429s."""
    extra: dict[str, Any] = {}
    if isinstance(exc, NotReplicated):  # the job exists (on the primary): its id, to check or to wait for
        extra.update(id=exc.job_ids[0], ids=exc.job_ids, replicas=exc.replicas)
    if isinstance(exc, InvalidFields):
        extra["detail"] = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                           for e in exc.errors]  # fmt: skip
    response = error_response(status_of(exc), exc.message, exc.code, **extra)
    response.headers.update(retry_headers(exc))
    return response


async def model_not_found(request: Request, exc: ModelNotFound) -> JSONResponse:
    """The 404 of a model no live worker has, naming the models the fleet has (``models`` too) and ``"wait"``."""
    from .routes.dropin import fleet_models

    try:
        models = sorted(await fleet_models(request.app.state.redis, request.app.state.settings))
    except TRANSIENT:
        models = []
    shown = ", ".join(models[:MODELS_SHOWN]) + (f" and {len(models) - MODELS_SHOWN} more" if len(models) >
                                                 MODELS_SHOWN else "")  # fmt: skip
    has = f"the fleet has {shown}" if models else "no live worker serves any model"
    message = f'{exc.message}; {has}. To queue it until a worker has it, submit with "wait": true'
    return error_response(404, message, exc.code, models=models)


MODELS_SHOWN = 20


def error_response(status: int, message: str, code: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, **extra}, status_code=status)


def retry_headers(exc: CorralError) -> dict[str, str]:
    """``Retry-After`` for the 429s."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return {"Retry-After": "1"} if isinstance(exc, QueueFull | NotReplicated) else {}


def shaped_error(
    path: str, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the shape of the API ``path`` belongs to: Ollama's ``{"error": message}`` on ``/api/``,
    OpenAI's error object on ``/v1/``, Corral's ``{"error", "code"}`` elsewhere."""
    body: dict[str, Any] = {"error": message, "code": code}
    if path.startswith("/api/"):
        body = {"error": message}
    elif path.startswith("/v1/"):
        body = openai_error(status, message, code)
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> JSONResponse:
        if isinstance(exc, ModelNotFound):
            return await model_not_found(request, exc)
        return corral_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed JSON body", "invalid_json")
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
            return error_response(400, "missing request body", "invalid_request")
        return corral_response(InvalidFields(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, f"path {request.url.path} not found", "not_found")
        if exc.status_code == 405:
            return error_response(
                405, f"method {request.method} not allowed on {request.url.path}", "bad_method"
            )
        return error_response(exc.status_code, str(exc.detail), "http_error")

    for kind in TRANSIENT:

        @app.exception_handler(kind)
        async def redis_down(request: Request, exc: Exception) -> JSONResponse:
            return error_response(503, f"redis unavailable: {exc}", "redis_unavailable")
