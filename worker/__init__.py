"""Corral's worker: runs on each Ollama host and consumes only the queues of the models that host has."""

from .check import check as check_backend
from .engine import Worker, run_worker

__all__ = ["Worker", "check_backend", "run_worker"]
