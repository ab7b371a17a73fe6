"""Corral's settings: one pydantic-settings class, every field a ``CORRAL_<NAME>`` environment variable.

Built once at an edge (CLI, API app factory, worker main) and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_REDIS_URL = "redis://127.0.0.1:6390/0"


class Settings(BaseSettings):
    """Every knob of Corral. See docs/configuration.md for the meaning of each."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore")

    redis_url: str = Field(EMBEDDED_REDIS_URL, description="Redis URL; the default is the embedded Redis")
    data_dir: Path = Field(Path(".corral"), description="embedded Redis data (AOF) and logs")
    ollama_url: str = Field("http://127.0.0.1:11434", description="the worker's local Ollama")
    worker_id: str = Field(default_factory=socket.gethostname, description="stable id of this worker host")
    worker_slots: int = Field(4, ge=1, le=256, description="concurrent jobs per worker")
    heartbeat_interval: float = Field(2.0, gt=0, description="seconds between worker heartbeats")
    heartbeat_ttl: float = Field(6.0, gt=0, description="a worker whose heartbeat is older is dead")
    model_refresh_interval: float = Field(5.0, gt=0, description="seconds between /api/tags reads")
    job_timeout: float = Field(600.0, gt=0, description="default seconds a job may run")
    queue_timeout: float = Field(0.0, ge=0, description="default queue-wait deadline in seconds; 0 = none")
    max_queue: int = Field(
        10000, ge=0, description="queued jobs per model before new ones are refused; 0 = no limit"
    )
    cold_delay: float = Field(
        2.0,
        ge=0,
        description="seconds a job waits for a worker with its model loaded before a cold one takes it",
    )
    max_batch: int = Field(1000, ge=1, le=100_000, description="jobs per POST /jobs/batch")
    janitor_interval: float = Field(1.0, gt=0, description="seconds between janitor passes")
    max_retries: int = Field(3, ge=0, description="re-queues after a worker died before a job fails")
    result_ttl: int = Field(86400, ge=1, description="seconds a finished job and its events are kept")
    events_maxlen: int = Field(10000, ge=100, description="cap of a job's replay stream")
    max_prompt_bytes: int = Field(1_048_576, ge=1, description="prompt + system + messages text, bytes")
    max_body_bytes: int = Field(16 * 1_048_576, ge=1024, description="largest request body, bytes")
    api_host: str = Field("127.0.0.1", description="address the API binds")
    api_port: int = Field(8000, ge=1, le=65535, description="port the API binds")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str) -> str:
        if not value or len(value) > 128 or any(c.isspace() for c in value):
            raise ValueError("worker_id must be 1-128 characters without spaces")
        return value
