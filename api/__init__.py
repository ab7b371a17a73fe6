"""Corral's HTTP API (FastAPI): submit jobs, follow their events, inspect the fleet.

``create_app`` is imported on first use: ``corral api`` reads its light modules first (``memory``: whether to run
itself again under the C allocator) and imports the app once, in the run that serves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'corral.api' has no attribute {name!r}")
