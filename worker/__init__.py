"""Corral's worker: runs beside each engine and consumes only the queues of the models that engine has.

Its parts, one job each:

- ``lifecycle``  ``Worker``: the parts put together; start, drain, stop (``run_worker`` runs one).
- ``dispatch``   the pop loop and the park: how jobs come (popped, or handed by an enqueue).
- ``jobs``       the slots and the running jobs; ``Jobs.start``, the one way a job starts.
- ``execute``    running one job against the engine (``emitter``: its writes to Redis, ``reply``: its reply).
- ``models``     what the engine has and holds in memory; ``heartbeat``: the timer that reads it and beats.
- ``control``    the pub/sub listener: wake-ups, handed jobs, cancels, drains.
- ``backends``   the engine's API (Ollama, OpenAI-compatible) over ``http``, a lean HTTP/1.1 client.
- ``check``      ``corral worker --check``.
"""

from .check import check as check_backend
from .lifecycle import Worker, run_worker

__all__ = ["Worker", "check_backend", "run_worker"]
