"""Corral's HTTP API (FastAPI): submit jobs, follow their events, inspect the fleet."""

from .app import create_app

__all__ = ["create_app"]
