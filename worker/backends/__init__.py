"""The worker's backends: one small interface (``Backend``) to the engine that runs the models.

``OllamaBackend`` speaks Ollama's API; ``OpenAIBackend`` the OpenAI-compatible API of vLLM, llama.cpp's server, LM
Studio…; both send their requests through ``HttpPool``. ``make_backend`` picks one from the settings.
"""

from __future__ import annotations

from corral.common.settings import Settings

from .base import Backend, Chunks
from .errors import ENGINE_ERRORS, BackendAuthRefused, BackendError, BackendModelMissing, BackendUnavailable
from .ollama import OllamaBackend
from .openai import OpenAIBackend
from .pool import Connection, Early, HttpPool


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name (``CORRAL_BACKEND``, or inferred from the URL)."""
    connection = Connection.from_settings(settings)
    if settings.engine_kind == "openai":
        return OpenAIBackend(connection, settings.worker_slots)
    return OllamaBackend(connection, settings.worker_slots)


__all__ = [
    "ENGINE_ERRORS",
    "Backend",
    "BackendAuthRefused",
    "BackendError",
    "BackendModelMissing",
    "BackendUnavailable",
    "Chunks",
    "Connection",
    "Early",
    "HttpPool",
    "OllamaBackend",
    "OpenAIBackend",
    "make_backend",
]
