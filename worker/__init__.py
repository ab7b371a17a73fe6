"""Corral's worker: runs on each Ollama host and consumes only the queues of the models that host has."""

from .engine import Worker, run_worker

__all__ = ["Worker", "run_worker"]
