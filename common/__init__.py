"""What the API, the worker and clients share: settings, key names, schemas, the job store, the chunk bus."""

from .client import AsyncClient, Client
from .errors import CorralError
from .schemas import JobRequest, JobView, Submitted
from .settings import Settings

__all__ = ["AsyncClient", "Client", "CorralError", "JobRequest", "JobView", "Settings", "Submitted"]
