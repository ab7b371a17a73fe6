"""The ``corral`` command: starts the parts (``up``, ``api``, ``worker``, ``redis``, ``simulate``) and talks to
the API (``submit``, ``status``, ``watch``, ``jobs``, ``keys``, …). The one package that imports both sides."""

from .main import main

__all__ = ["main"]
