"""The configuration file: a TOML file whose sections map onto the flat settings (``[worker] slots = 8`` is
``CORRAL_WORKER_SLOTS=8``), read by pydantic-settings as one more source, below the environment.

Which file: ``CORRAL_CONFIG`` (``corral --config PATH`` sets it), else ``./corral.toml`` when it exists, else none;
``CORRAL_CONFIG=""`` reads no file. A key the file does not know is an error naming the key and the file, never
ignored. Every setting is also accepted at the top level under its own name (``worker_slots = 8``).

Sections are tables of scalars (``SECTIONS``); a section that is a list of tables (``[[name]]``) maps onto one
setting whole, through ``LIST_SECTIONS`` (``[[hosts]]``).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from .errors import CorralError

CONFIG_ENV = "CORRAL_CONFIG"
DEFAULT_FILE = "corral.toml"

# section -> {key in the file: setting}; a setting missing from its model (another version) is left out
SECTIONS: dict[str, dict[str, str]] = {
    "redis": {
        "url": "redis_url",
        "data_dir": "data_dir",
        "sentinel_password": "sentinel_password",
        "ack_replicas": "ack_replicas",
        "ack_timeout_ms": "ack_timeout_ms",
    },
    "api": {
        "host": "api_host",
        "port": "api_port",
        "keys": "api_keys",
        "allow_unauthenticated": "allow_unauthenticated",
        "keep_alive_timeout": "keep_alive_timeout",
        "trim_memory": "trim_memory",
        "direct_link": "direct_link",
        "link_host": "link_host",
    },
    "worker": {
        "id": "worker_id",
        "slots": "worker_slots",
        "weight": "worker_weight",
        "max_loaded_models": "max_loaded_models",
        "heartbeat_interval": "heartbeat_interval",
        "heartbeat_ttl": "heartbeat_ttl",
        "model_refresh_interval": "model_refresh_interval",
    },
    "backend": {
        "type": "backend",
        "url": "backend_url",
        "ollama_url": "ollama_url",
        "token": "backend_token",
        "headers": "backend_headers",
        "verify": "backend_verify",
        "connect_timeout": "backend_connect_timeout",
        "read_timeout": "backend_read_timeout",
    },
    "scheduling": {
        "job_timeout": "job_timeout",
        "queue_timeout": "queue_timeout",
        "cold_delay": "cold_delay",
        "switch_delay": "switch_delay",
        "cold_delay_factor": "cold_delay_factor",
        "switch_delay_factor": "switch_delay_factor",
        "priority_aging": "priority_aging",
        "push_dispatch": "push_dispatch",
        "max_retries": "max_retries",
        "janitor_interval": "janitor_interval",
    },
    "limits": {
        "max_queue": "max_queue",
        "max_batch": "max_batch",
        "rate_limit": "rate_limit",
        "rate_burst": "rate_burst",
        "max_jobs_per_key": "max_jobs_per_key",
        "max_prompt_bytes": "max_prompt_bytes",
        "max_body_bytes": "max_body_bytes",
        "max_header_bytes": "max_header_bytes",
        "max_headers": "max_headers",
        "head_timeout": "head_timeout",
        "body_timeout": "body_timeout",
        "max_messages": "max_messages",
        "max_image_bytes": "max_image_bytes",
    },
    "models": {"pull_replicas": "pull_replicas", "replace_after": "model_op_replace_after"},
    "retention": {
        "result_ttl": "result_ttl",
        "history_ttl": "history_ttl",
        "history_max": "history_max",
        "idempotency_ttl": "idempotency_ttl",
        "events_maxlen": "events_maxlen",
    },
    "log": {"level": "log_level", "format": "log_format", "access": "log_access"},
    "cli": {"api_key": "api_key", "api_url": "api_url"},
}


def _hosts(path: Path, section: str, tables: list[dict[str, Any]]) -> Any:
    """``[[hosts]]``: engines a fleet process serves (``common.hosts.HostSpec``'s fields, checked in full by
    ``configured_hosts`` when the fleet starts); the setting keeps them as JSON."""
    for index, table in enumerate(tables):
        if not isinstance(table, dict) or not isinstance(table.get("url"), str):
            raise ConfigError(
                f"{path}: [[{section}]] entry {index + 1} needs a url", path=str(path), key=section
            )
    return json.dumps(tables)


# section -> the setting a list of tables (``[[section]]``) becomes, and how each table is checked
LIST_SECTIONS: dict[str, tuple[str, Callable[[Path, str, list[dict[str, Any]]], Any]]] = {
    "hosts": ("hosts", _hosts)
}


def _joined(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _json_table(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def _bool_text(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value


# settings whose file form is friendlier than their environment string
CONVERT: dict[str, Callable[[Any], Any]] = {
    "api_keys": _joined,
    "backend_headers": _json_table,
    "backend_verify": _bool_text,
}


class ConfigError(CorralError):
    """The configuration file cannot be used: missing, not TOML, or a key it does not know. ``str()`` is the one
    line to show."""

    code = "config_error"


@dataclass
class ConfigFile:
    """A file read: the settings it sets (by setting name) and, for each, the key it was written as."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def find_config_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """The file to read: ``CORRAL_CONFIG`` (which must exist; empty: none), else ``./corral.toml`` if present."""
    environ = os.environ if environ is None else environ
    named = environ.get(CONFIG_ENV)
    if named is not None:
        if not named:
            return None
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} not found ({CONFIG_ENV} or --config)", path=str(path))
        return path
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def read_config_file(path: Path, fields: Iterable[str]) -> ConfigFile:
    """Read and flatten ``path``; ``fields``: the setting names the model has. Raises ``ConfigError``."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}", path=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", path=str(path)) from None
    known = set(fields)
    config = ConfigFile(path)
    for name, value in document.items():
        if name in LIST_SECTIONS:
            setting, check = LIST_SECTIONS[name]
            if not isinstance(value, list):
                raise ConfigError(f"{path}: [[{name}]] must be a list of tables", path=str(path), key=name)
            _set(config, setting, check(path, name, value), f"[[{name}]]")
        elif name in SECTIONS and isinstance(value, dict):
            _read_section(config, name, value, known)
        elif name in known and not isinstance(value, dict):
            _set(config, name, value, name)
        else:
            raise _unknown(path, name, None, _top_level_names(known))
    return config


def _read_section(config: ConfigFile, section: str, table: dict[str, Any], known: set[str]) -> None:
    mapping = {key: setting for key, setting in SECTIONS[section].items() if setting in known}
    for key, value in table.items():
        if key not in mapping:
            raise _unknown(config.path, key, section, mapping)
        _set(config, mapping[key], value, f"[{section}] {key}")


def _set(config: ConfigFile, setting: str, value: Any, written: str) -> None:
    if setting in config.values:
        raise ConfigError(
            f"{config.path}: {written} sets {setting} again (already set by {config.keys[setting]})",
            path=str(config.path),
            key=written,
        )
    config.values[setting] = CONVERT.get(setting, lambda v: v)(value)
    config.keys[setting] = written


def _top_level_names(known: set[str]) -> set[str]:
    return set(SECTIONS) | set(LIST_SECTIONS) | known


def _unknown(path: Path, key: str, section: str | None, choices: Iterable[str]) -> ConfigError:
    where = f"[{section}] {key}" if section else key
    if section is None and key in SECTIONS:
        return ConfigError(f"{path}: {key} is a section: write [{key}] and its keys", path=str(path), key=key)
    close = difflib.get_close_matches(key, list(choices), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{path}: unknown key {where}{hint}", path=str(path), key=where)


class ConfigFileSource(PydanticBaseSettingsSource):
    """pydantic-settings' source for the file ``find_config_file`` names (nothing when there is none)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.file = None if path is None else read_config_file(path, settings_cls.model_fields)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value = None if self.file is None else self.file.values.get(field_name)
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {} if self.file is None else dict(self.file.values)


def env_name(setting: str) -> str:
    return f"CORRAL_{setting.upper()}"


def origins(fields: Iterable[str], config: ConfigFile | None, environ: Mapping[str, str]) -> dict[str, str]:
    """Where each setting's value comes from: ``env:CORRAL_X``, ``file:PATH`` or ``default`` (the environment
    wins over the file, as in ``Settings``; as pydantic-settings does, names match without regard to case and an
    empty variable counts as unset)."""
    set_in_env = {name.lower() for name, value in environ.items() if value}
    result = {}
    for name in fields:
        if env_name(name).lower() in set_in_env:
            result[name] = f"env:{env_name(name)}"
        elif config is not None and name in config.values:
            result[name] = f"file:{config.path}"
        else:
            result[name] = "default"
    return result


def file_key(setting: str) -> str:
    """How ``setting`` is written in the file: ``[worker] slots``; the top-level name for one in no section."""
    for section, mapping in SECTIONS.items():
        for key, name in mapping.items():
            if name == setting:
                return f"[{section}] {key}"
    return setting
