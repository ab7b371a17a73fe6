"""Corral's Python clients: ``Client`` and ``AsyncClient`` talk to the API over HTTP; ``DirectClient`` enqueues
straight into Redis, as the workers see it."""

from .http import AsyncClient, Client, DirectClient, Job

__all__ = ["AsyncClient", "Client", "DirectClient", "Job"]
