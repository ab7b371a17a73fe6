"""What the API and the worker share: settings, key names, schemas, the job store and its Lua scripts, Redis
connections, the registry of workers, the janitor, scheduling rules.

The names below are imported on first use, so that importing one module of the package (``corral.common.keys``,
say) does not build every schema's model."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import CorralError
    from .schemas import JobRequest, JobView, Submitted
    from .settings import Settings

__all__ = ["CorralError", "JobRequest", "JobView", "Settings", "Submitted"]
_HOMES = {"CorralError": "errors", "JobRequest": "schemas", "JobView": "schemas", "Settings": "settings",
          "Submitted": "schemas"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'corral.common' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
