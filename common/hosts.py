"""Hosts registered by URL: engines a ``corral fleet`` process serves with nothing installed beside them.

A host is a ``HostSpec`` (URL, kind, slots, weight, TLS, token, headers). It is stored in two hashes: ``corral:hosts``
holds what anyone may see (the URL with any password masked, no token, only the names of the extra headers), and
``corral:hosts:secrets`` the full URL, token and headers, read only by the fleet processes (the API never answers
with them, and logs show ``redacted_url``). Every change is published on ``corral:hosts:changed``, so running fleet
processes start or drain the host's worker within a moment; each reconciles every heartbeat interval too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from . import keys
from .names import WORKER_ID_RE
from .settings import Settings, parse_headers, redacted_url

CHANGED = b"changed"  # the message published on HOSTS_CHANNEL when the registered hosts change


def default_name(url: str) -> str:
    """A host name from its URL: ``http://gpu-1:11434`` → ``gpu-1-11434``."""
    parts = urlsplit(url)
    name = f"{parts.hostname or 'host'}-{parts.port or (443 if parts.scheme == 'https' else 80)}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:128]


class HostSpec(BaseModel):
    """One engine registered by URL: what its worker needs. ``token`` and ``headers`` are secrets (``repr`` and
    ``str`` hide them); ``headers`` is a JSON object or ``name=value,name=value``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="the engine's base URL (an OpenAI-compatible one usually ends in /v1)")
    name: str = Field("", description="the host's name and its worker's id; default: host-port of the URL")
    kind: Literal["auto", "ollama", "openai"] = Field(
        "auto", description="auto: openai when the path ends in /v1"
    )
    slots: int = Field(4, ge=1, le=256, description="concurrent jobs on this host")
    weight: float = Field(1.0, ge=0, description="host weight / priority for the scheduler")
    max_loaded_models: int = Field(0, ge=0, description="models it can hold at once; 0 = unknown")
    verify: str = Field(
        "true", description="TLS verification: true, false or a CA bundle path on the fleet host"
    )
    token: SecretStr | None = Field(None, description="bearer token sent to the engine")
    headers: SecretStr | None = Field(None, description="extra headers sent to the engine")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http:// or https:// with a host")
        return value

    @field_validator("verify")
    @classmethod
    def _verify(cls, value: str) -> str:
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes", "on", ""}:
            return "true"
        return "false" if lowered in {"false", "0", "no", "off"} else value

    @field_validator("token", "headers")
    @classmethod
    def _secrets(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # an empty token or header list is none
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_headers(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _defaults(self) -> HostSpec:
        if not self.name:
            object.__setattr__(self, "name", default_name(self.url))
        if self.kind == "auto":  # as CORRAL_BACKEND=auto: OpenAI's API when the path ends in /v1
            object.__setattr__(self, "kind", "openai" if self.url.endswith("/v1") else "ollama")
        if not WORKER_ID_RE.fullmatch(self.name):
            raise ValueError("name must be 1-128 letters, digits, '.', '_', '-' or '@'")
        return self

    def __repr_args__(self) -> Any:
        """``repr`` and ``str`` show the URL as logs may (a password in it masked)."""
        for name, value in super().__repr_args__():
            yield name, redacted_url(value) if name == "url" else value

    def public(self) -> dict[str, Any]:
        """What ``GET /hosts`` and ``corral hosts ls`` show: no secret."""
        header_names = sorted(parse_headers(self.headers.get_secret_value())) if self.headers else []
        return {"name": self.name, "url": redacted_url(self.url), "kind": self.kind, "slots": self.slots,
                "weight": self.weight, "max_loaded_models": self.max_loaded_models, "verify": self.verify,
                "token": self.token is not None, "headers": header_names}  # fmt: skip

    def secrets(self) -> dict[str, Any]:
        return {"url": self.url, "token": self.token.get_secret_value() if self.token else None,
                "headers": self.headers.get_secret_value() if self.headers else None}  # fmt: skip

    @classmethod
    def from_stored(cls, public: bytes | str, secrets: bytes | str | None) -> HostSpec:
        record = json.loads(public)
        hidden = json.loads(secrets) if secrets else {}
        fields = {k: record[k] for k in ("name", "kind", "slots", "weight", "max_loaded_models", "verify")}
        return cls(url=hidden.get("url") or record["url"], token=hidden.get("token"), headers=hidden.get("headers"),
                   **fields)  # fmt: skip

    def worker_settings(self, settings: Settings) -> Settings:
        """The settings of this host's worker: the fleet's own, with this host's engine, id, slots and weight."""
        return settings.model_copy(update={
            "worker_id": self.name, "backend_url": self.url, "backend": self.kind, "backend_token": self.token,
            "backend_headers": self.headers, "backend_verify": self.verify, "worker_slots": self.slots,
            "worker_weight": self.weight, "max_loaded_models": self.max_loaded_models})  # fmt: skip


def hosts_from_config(entries: Iterable[Mapping[str, Any]]) -> list[HostSpec]:
    """The hosts of a configuration file's ``[[hosts]]`` tables (the fields of ``HostSpec``); a bad entry raises
    ``ValueError`` naming its position. Registered at start by ``corral fleet`` (``run_fleet(settings, hosts)``)."""
    hosts = []
    for index, entry in enumerate(entries):
        try:
            hosts.append(HostSpec.model_validate(dict(entry)))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'host'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"hosts[{index}]: {problems}") from None
    return hosts


def configured_hosts(settings: Any) -> list[HostSpec]:
    """The hosts of the ``hosts`` setting (the config file's ``[[hosts]]``, or a JSON list in ``CORRAL_HOSTS``)."""
    if settings.hosts is None:
        return []
    try:
        entries = json.loads(settings.hosts.get_secret_value())
    except ValueError:
        raise ValueError("CORRAL_HOSTS: not a JSON list of host tables") from None
    if not isinstance(entries, list):
        raise ValueError("CORRAL_HOSTS: not a JSON list of host tables")
    return hosts_from_config(entries)


async def register_hosts(redis: Any, hosts: Iterable[HostSpec]) -> list[str]:
    """Register (or replace) hosts, in one transaction, and tell the fleet processes; returns their names. The
    entry point for hosts from the CLI, the API, ``corral fleet --host`` and the configuration file."""
    hosts = list(hosts)
    if not hosts:
        return []
    pipe = redis.pipeline(transaction=True)
    for host in hosts:
        public = {**host.public(), "added_at": round(time.time(), 3)}
        pipe.hset(keys.HOST_SECRETS, host.name, json.dumps(host.secrets()))
        pipe.hset(keys.HOSTS, host.name, json.dumps(public))
    pipe.publish(keys.HOSTS_CHANNEL, CHANGED)
    await pipe.execute()
    return [host.name for host in hosts]


async def remove_host(redis: Any, name: str) -> bool:
    """Unregister a host (its fleet process drains its worker); False when there was none of that name."""
    pipe = redis.pipeline(transaction=True)
    pipe.hdel(keys.HOSTS, name)
    pipe.hdel(keys.HOST_SECRETS, name)
    pipe.publish(keys.HOSTS_CHANNEL, CHANGED)
    removed, _, _ = await pipe.execute()
    return bool(removed)


async def public_hosts(redis: Any) -> list[dict[str, Any]]:
    """Every registered host as anyone may see it, by name."""
    raw = await redis.hgetall(keys.HOSTS)
    return sorted((json.loads(v) for v in raw.values()), key=lambda h: str(h["name"]))


async def load_hosts(redis: Any) -> dict[str, HostSpec]:
    """Every registered host with its secrets (for the fleet processes); a record that no longer parses is left
    out."""
    pipe = redis.pipeline(transaction=True)
    pipe.hgetall(keys.HOSTS)
    pipe.hgetall(keys.HOST_SECRETS)
    public, secrets = await pipe.execute()
    hosts = {}
    for name, record in public.items():
        try:
            hosts[name.decode()] = HostSpec.from_stored(record, secrets.get(name))
        except (ValueError, KeyError):
            continue
    return hosts


__all__ = [
    "CHANGED",
    "HostSpec",
    "configured_hosts",
    "default_name",
    "hosts_from_config",
    "load_hosts",
    "public_hosts",
    "register_hosts",
    "remove_host",
]
