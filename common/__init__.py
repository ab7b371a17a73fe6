"""What the API and the worker share: settings, key names, schemas, the job store and its Lua scripts, Redis
connections, the registry of workers, the janitor, scheduling rules."""

from .errors import CorralError
from .schemas import JobRequest, JobView, Submitted
from .settings import Settings

__all__ = ["CorralError", "JobRequest", "JobView", "Settings", "Submitted"]
