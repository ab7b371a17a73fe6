"""Corral's settings: one pydantic-settings class, every field a ``CORRAL_<NAME>`` environment variable and a key of
the configuration file (``common/configfile.py``); the environment wins over the file.

Built once at an edge (CLI, API app factory, worker main) and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .configfile import ConfigFileSource, find_config_file

EMBEDDED_REDIS_URL = "redis://127.0.0.1:6390/0"
UNPARSABLE_URL = "<unparsable url>"


class Settings(BaseSettings):
    """Every knob of Corral. See docs/configuration.md for the meaning of each."""

    # an empty variable counts as unset: compose's ${CORRAL_X:-} leaves the file's value in place
    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore", env_ignore_empty=True)

    redis_url: str = Field(EMBEDDED_REDIS_URL, description="Redis URL; the default is the embedded Redis")
    sentinel_password: SecretStr = Field(
        SecretStr(""), description="the sentinels' password, for a redis+sentinel:// CORRAL_REDIS_URL"
    )
    ack_replicas: int = Field(
        0, ge=0, description="replicas that must hold a submitted job before the API acknowledges it; 0 = off"
    )
    ack_timeout_ms: int = Field(
        500, ge=1, description="milliseconds a submit waits for CORRAL_ACK_REPLICAS before answering 503"
    )
    data_dir: Path = Field(Path(".corral"), description="embedded Redis data (AOF) and logs")
    ollama_url: str = Field("http://127.0.0.1:11434", description="the worker's local Ollama")
    backend: Literal["auto", "ollama", "openai"] = Field(
        "auto", description="the worker's engine API; auto: openai when the URL path ends in /v1"
    )
    backend_url: str = Field("", description="the worker's engine; empty: CORRAL_OLLAMA_URL")
    backend_token: SecretStr | None = Field(None, description="bearer token sent to the backend")
    backend_headers: SecretStr | None = Field(None, description="extra headers: JSON object or k=v,k=v")
    backend_verify: str = Field("true", description="TLS verification: true, false or a CA bundle path")
    backend_connect_timeout: float = Field(10.0, gt=0, description="seconds to connect to the backend")
    backend_read_timeout: float = Field(0.0, ge=0, description="seconds between bytes; 0 = no limit")
    max_loaded_models: int = Field(0, ge=0, description="models this host can hold at once; 0 = unknown")
    worker_weight: float = Field(1.0, ge=0, description="host weight / priority for the scheduler")
    history_ttl: int = Field(86400, ge=1, description="seconds a job stays in the history index")
    history_max: int = Field(100_000, ge=1, description="jobs kept in the history index")
    idempotency_ttl: int = Field(86400, ge=1, description="seconds a submit's Idempotency-Key is remembered")
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
    cold_delay: float | None = Field(
        None,
        ge=0,
        description="seconds a job waits for a worker with its model loaded before a cold one takes it; unset: "
        "cold_delay_factor times the longer of the model's measured load time and job time on the host",
    )
    switch_delay: float | None = Field(
        None,
        ge=0,
        description="seconds a job of a model no worker has loaded waits before a worker at its model capacity "
        "stops taking one of its models to load this one; unset: switch_delay_factor times the model's measured "
        "load or job time, the longer",
    )
    cold_delay_factor: float = Field(
        1.0, ge=0, description="an unset cold_delay is this many times the model's load or job time"
    )
    switch_delay_factor: float = Field(
        3.0, ge=0, description="an unset switch_delay is this many times the model's load or job time"
    )
    priority_aging: float = Field(
        30.0,
        ge=0,
        description="seconds a priority level with queued jobs may go unserved before it gets the next pop; "
        "0 = strict priorities",
    )
    push_dispatch: bool = Field(
        True,
        description="an idle worker parks for its loaded models and an enqueue hands it the job directly "
        "(one Redis round trip less per job on an idle fleet); false: workers always pop",
    )
    max_batch: int = Field(1000, ge=1, le=100_000, description="jobs per POST /jobs/batch")
    janitor_interval: float = Field(1.0, gt=0, description="seconds between janitor passes")
    max_retries: int = Field(3, ge=0, description="re-queues after a worker died before a job fails")
    pull_replicas: int = Field(
        1,
        ge=0,
        description="hosts a drop-in POST /api/pull puts a model on when it names none; 0 = every host",
    )
    model_op_replace_after: float = Field(
        30.0,
        gt=0,
        description="seconds a dead host keeps its share of a replicas pull before another host gets it",
    )
    hosts: SecretStr | None = Field(
        None,
        description="engines `corral fleet` and `corral up` serve by URL: the config file's [[hosts]] tables, or a "
        "JSON list of them (url, name, kind, slots, token, ...)",
    )
    result_ttl: int = Field(86400, ge=1, description="seconds a finished job and its events are kept")
    events_maxlen: int = Field(10000, ge=100, description="cap of a job's replay stream")
    max_prompt_bytes: int = Field(1_048_576, ge=1, description="prompt + system + messages text, bytes")
    max_body_bytes: int = Field(16 * 1_048_576, ge=1024, description="largest request body, bytes")
    max_header_bytes: int = Field(32768, ge=1024, description="largest request head (line + headers), bytes")
    max_headers: int = Field(100, ge=8, description="most headers in one request")
    head_timeout: float = Field(10.0, gt=0, description="seconds a request head may take to arrive")
    body_timeout: float = Field(30.0, gt=0, description="seconds a request body may stall")
    keep_alive_timeout: int = Field(75, ge=1, description="seconds an idle keep-alive connection stays open")
    trim_memory: bool = Field(True, description="give freed memory back after a burst of streams (glibc)")
    direct_link: bool = Field(
        True,
        description="workers send the chunk events of a job the API follows straight to that API as well as "
        "through Redis (one process hop less per chunk); false: through Redis only",
    )
    link_host: str = Field(
        "", description="address the API's direct link listens on; empty: the address the API binds"
    )
    max_messages: int = Field(1024, ge=1, description="messages in one chat request")
    max_image_bytes: int = Field(10 * 1_048_576, ge=1, description="one image, decoded bytes")
    api_keys: SecretStr = Field(SecretStr(""), description="API keys, comma-separated KEY[:SCOPE]")
    allow_unauthenticated: bool = Field(
        False, description="let an API without keys bind a non-loopback address"
    )
    rate_limit: float = Field(20.0, ge=0, description="requests per second per API key; 0 = no limit")
    rate_burst: int = Field(
        40, ge=1, description="requests an API key may send at once before the rate applies"
    )
    max_jobs_per_key: int = Field(1000, ge=0, description="queued + running jobs per API key; 0 = no limit")
    api_key: SecretStr = Field(SecretStr(""), description="the key the CLI's client commands send")
    api_url: str = Field(
        "", description="the API the CLI's client commands talk to; empty: api_host:api_port"
    )
    api_host: str = Field("127.0.0.1", description="address the API binds")
    api_port: int = Field(8000, ge=1, le=65535, description="port the API binds")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["text", "json"] = Field("text", description="log lines: text (key=value) or json")
    log_access: bool | None = Field(None, description="the API's HTTP access log; unset: on at DEBUG only")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The configuration file ranks below the environment: ``CORRAL_*`` variables override it."""
        config = ConfigFileSource(settings_cls, find_config_file())
        return init_settings, env_settings, dotenv_settings, file_secret_settings, config

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return value

    @model_validator(mode="after")
    def _sentinel_password(self) -> Settings:
        # carried in the URL's query, so every client made from the URL alone (workers, the CLI) gets it
        from .sentinel import (
            with_sentinel_password,  # (lazy: it imports redis, which `import corral` does not)
        )

        self.redis_url = with_sentinel_password(self.redis_url, self.sentinel_password.get_secret_value())
        return self

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str) -> str:
        if not value or len(value) > 128 or any(c.isspace() for c in value):
            raise ValueError("worker_id must be 1-128 characters without spaces")
        return value

    @field_validator("backend_verify")
    @classmethod
    def _verify(cls, value: str) -> str:
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes", "on", ""}:
            return "true"
        if lowered in {"false", "0", "no", "off"}:
            return "false"
        if not Path(value).is_file():
            raise ValueError("backend_verify must be true, false or the path of a CA bundle file")
        return value

    @field_validator("backend_headers")
    @classmethod
    def _headers(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_headers(value.get_secret_value())  # fails early on a malformed value
        return value

    @property
    def engine_url(self) -> str:
        """The backend's base URL: ``CORRAL_BACKEND_URL``, else ``CORRAL_OLLAMA_URL``."""
        return (self.backend_url or self.ollama_url).rstrip("/")

    @property
    def engine_kind(self) -> str:
        """``ollama`` or ``openai``: ``CORRAL_BACKEND``, or inferred (a URL path ending in ``/v1`` is OpenAI)."""
        if self.backend != "auto":
            return self.backend
        return "openai" if self.engine_url.endswith("/v1") else "ollama"

    @property
    def engine_display_url(self) -> str:
        """The backend's URL without any ``user:password@`` part: what logs and heartbeats show."""
        return redacted_url(self.engine_url)

    def engine_headers(self) -> dict[str, str]:
        """Extra headers plus ``Authorization: Bearer …`` when a token is set (secrets: never log these)."""
        headers = parse_headers(self.backend_headers.get_secret_value()) if self.backend_headers else {}
        if self.backend_token is not None and self.backend_token.get_secret_value():
            headers["Authorization"] = f"Bearer {self.backend_token.get_secret_value()}"
        return headers


def redacted_url(url: str) -> str:
    """``url`` as logs, heartbeats and the dashboard may show it: a password masked (the user name beside it kept:
    the operator sees which ACL user a service runs as), a lone user name masked too (it may be a token), any
    query masked (certificate paths, passwords), any fragment dropped; a placeholder for a URL that does not parse,
    or that has an ``@`` outside its authority (a password with an unescaped ``/``, ``?`` or ``#`` would show)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return UNPARSABLE_URL
    if "@" in url and "@" not in parts.netloc:
        return UNPARSABLE_URL
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        host = f"{userinfo.partition(':')[0]}:***@{host}" if password is not None else f"***@{host}"
    scheme = f"{parts.scheme}:" if parts.scheme else ""
    # an empty authority is kept as written: unix:///run/redis.sock stays itself
    authority = f"//{host}" if url.strip()[len(scheme) :].startswith("//") else ""
    return f"{scheme}{authority}{parts.path}{'?***' if parts.query else ''}"


def parse_headers(text: str) -> dict[str, str]:
    """``{"X-A": "1"}`` or ``X-A=1,X-B=2`` → a dict; raises ``ValueError`` on anything else."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("backend_headers: invalid JSON object") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("backend_headers: a JSON object of strings is expected")
        return {str(k): v for k, v in value.items()}
    headers = {}
    for pair in text.split(","):
        name, sep, val = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError("backend_headers: use name=value,name=value or a JSON object")
        headers[name.strip()] = val.strip()
    return headers
