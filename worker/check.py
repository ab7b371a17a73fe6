"""``corral worker --check``: the "test connection" button. Reaches the configured backend, lists its models and
times a one-token generation; one line per check, ✓ or ✗, and an exit code that says what failed:

0 all passed · 4 unreachable (connection, TLS, timeout, not the expected API) · 5 authentication refused ·
6 no models · 7 the test generation failed. Needs no Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from corral.common.settings import Settings

from .backends import (
    ENGINE_ERRORS,
    Backend,
    BackendAuthRefused,
    BackendError,
    BackendModelMissing,
    make_backend,
)

OK, UNREACHABLE, AUTH_REFUSED, NO_MODELS, GENERATION_FAILED = 0, 4, 5, 6, 7
TRIES = 3  # models tried for the test generation (the first may be an embedding model)


def ms_since(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.0f} ms"


async def tiny_generation(backend: Backend, model: str) -> int:
    """One token from ``model``; returns the tokens the backend reported (0 if it says nothing)."""
    request = {"model": model, "prompt": "hi", "options": {"num_predict": 1}}
    async with backend.stream("generate", request) as chunks:
        async for chunk in chunks:
            if chunk.get("done"):
                return int(chunk.get("eval_count") or 0)
    raise BackendError("stream ended without a final chunk")


async def say_version(backend: Backend, say: Callable[[bool, str], None]) -> None:
    """The engine's version as a line of its own (informative: an engine that does not tell fails nothing)."""
    start = time.monotonic()
    try:
        version = await backend.version()
    except ENGINE_ERRORS:
        version = None
    say(True, f"version: {version or 'not reported'} ({ms_since(start)})")


async def run_checks(backend: Backend, where: str, say: Callable[[bool, str], None]) -> int:
    start = time.monotonic()
    try:
        models = await backend.list_models()
    except BackendAuthRefused as exc:
        say(True, f"reachable: {where} ({ms_since(start)})")
        say(False, f"auth: refused ({exc.status}): {exc.message}")
        return AUTH_REFUSED
    except BackendModelMissing:
        say(
            False,
            f"reachable: {where}, but it has no {backend.kind} model list (404): is CORRAL_BACKEND right?",
        )
        return UNREACHABLE
    except ENGINE_ERRORS as exc:
        say(False, f"reachable: {where}: {exc.message}")
        return UNREACHABLE
    say(True, f"reachable: {where} ({ms_since(start)})")
    say(True, "auth: accepted")
    await say_version(backend, say)
    names = [str(m.get("name") or m.get("model")) for m in models]
    if not names:
        say(False, "models: none")
        return NO_MODELS
    say(True, f"models: {', '.join(names)}")
    reasons = []
    for name in names[:TRIES]:
        start = time.monotonic()
        try:
            tokens = await tiny_generation(backend, name)
        except ENGINE_ERRORS as exc:
            reasons.append(f"{name}: {exc.message}")
            continue
        say(True, f"generation: {name}, {tokens} token(s) in {ms_since(start)}")
        return OK
    say(False, f"generation: {'; '.join(reasons)}")
    return GENERATION_FAILED


async def check_backend(settings: Settings, say: Callable[[bool, str], None]) -> int:
    backend = make_backend(settings)
    try:
        return await run_checks(backend, f"{backend.kind} at {settings.engine_display_url}", say)
    finally:
        await backend.close()


def print_line(ok: bool, text: str) -> None:
    print(f"{'✓' if ok else '✗'} {text}", flush=True)


def check(settings: Settings, say: Callable[[bool, str], None] = print_line) -> int:
    """Run the checks; the exit code of ``corral worker --check``."""
    code = asyncio.run(check_backend(settings, say))
    verdict: dict[int, str] = {OK: "backend OK", UNREACHABLE: "backend unreachable", AUTH_REFUSED:
               "authentication refused", NO_MODELS: "no models", GENERATION_FAILED: "generation failed"}  # fmt: skip
    print(f"{'OK' if code == OK else 'FAILED'}: {verdict[code]} (exit {code})", flush=True)
    return code
