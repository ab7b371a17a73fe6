"""The configuration file on the command line: ``--config PATH`` on every command, the settings loaded once with
one clear line for a bad file or value, and ``corral config``: the effective settings, secrets masked, each with
where it came from (``default``, ``file:PATH``, ``env:CORRAL_X``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from corral.common.configfile import (
    CONFIG_ENV,
    SECTIONS,
    ConfigError,
    ConfigFile,
    env_name,
    find_config_file,
    origins,
    read_config_file,
)
from corral.common.settings import Settings, parse_headers, redacted_url

from . import failures

MASK = "***"
URL_SETTINGS = {"redis_url", "backend_url", "ollama_url", "api_url"}
SECRET_WORDS = ("key", "token", "password", "secret", "headers")


def add_config_option(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction[Any]) -> None:
    """``--config PATH`` before the command and after it (``corral --config f up``, ``corral up --config f``)."""
    helptext = f"configuration file (TOML); default: ${CONFIG_ENV}, else ./corral.toml if present"
    parser.add_argument("--config", metavar="PATH", help=helptext)
    commands = list(sub.choices.values())
    while commands:  # every command and sub-command (keys list, …)
        command = commands.pop()
        # (SUPPRESS: a command without the option leaves the value given before it)
        command.add_argument("--config", metavar="PATH", help=helptext, default=argparse.SUPPRESS)
        for action in command._actions:  # argparse lists a command's sub-commands nowhere public
            if isinstance(action, argparse._SubParsersAction):
                commands += action.choices.values()


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    config = sub.add_parser(
        "config", help="print the effective configuration (secrets masked) and where each value came from"
    )
    config.add_argument("--json", action="store_true", help="print JSON: each setting's value and source")


def load_settings(command: str, config: str | None) -> Settings:
    """The settings, from ``config`` (it becomes ``CORRAL_CONFIG``, so the processes ``corral up`` starts read the
    same file), the environment and the defaults; a bad file or value exits 2 with one line on stderr."""
    if config is not None:
        os.environ[CONFIG_ENV] = str(Path(config).expanduser().resolve())
    try:
        return Settings()
    except ConfigError as exc:
        problem = exc.message
    except ValidationError as exc:
        problem = f"invalid settings: {describe_errors(exc)}"
    failures.say(command, problem)
    sys.exit(failures.BAD_REQUEST)


def current_file() -> ConfigFile | None:
    path = find_config_file()
    return None if path is None else read_config_file(path, Settings.model_fields)


def describe_errors(exc: ValidationError) -> str:
    """pydantic's errors on one line, each named as the operator wrote it: the file's key or the variable."""
    try:
        config = current_file()
    except ConfigError:
        config = None
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        from_file = origins([name], config, os.environ)[name].startswith("file:")
        where = f"{config.path}: {config.keys[name]}" if config and from_file else env_name(name)
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def shown(name: str, value: Any) -> Any:
    """A setting as ``corral config`` shows it: URLs without passwords, keys, tokens and header values masked."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
        if name == "api_keys":
            return [
                MASK + (f":{k.partition(':')[2]}" if ":" in k else "") for k in value.split(",") if k.strip()
            ]
        if name == "backend_headers":
            try:
                return {header: MASK for header in parse_headers(value)}
            except ValueError:
                return MASK
        return MASK if value else ""
    if isinstance(value, str) and name in URL_SETTINGS:
        return redacted_url(value) if value else value
    if isinstance(value, str) and value and any(word in name for word in SECRET_WORDS):
        return MASK
    if isinstance(value, Path):
        return str(value)
    return value


def effective(settings: Settings) -> dict[str, dict[str, Any]]:
    config = current_file()
    where = origins(Settings.model_fields, config, os.environ)
    return {
        name: {"value": shown(name, getattr(settings, name)), "source": where[name], "env": env_name(name)}
        for name in Settings.model_fields
    }


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def as_toml(table: dict[str, dict[str, Any]], path: Path | None) -> str:
    """The settings as the file would set them, grouped in its sections, each line ending in its source."""
    lines = [
        "# corral config: the effective settings (environment over file over defaults; secrets masked)",
        f"# file: {path if path is not None else 'none'}",
    ]
    placed = set()
    for section, mapping in SECTIONS.items():
        entries = [(key, name) for key, name in mapping.items() if name in table]
        if entries:
            lines += ["", f"[{section}]"]
        for key, name in entries:
            placed.add(name)
            lines.append(_line(key, table[name]))
    rest = [name for name in table if name not in placed]
    if rest:
        lines += ["", "# settings of no section (top-level keys)"]
        lines += [_line(name, table[name]) for name in rest]
    return "\n".join(lines)


def _line(key: str, entry: dict[str, Any]) -> str:
    value = entry["value"]
    text = f"# {key} = (unset)" if value is None else f"{key} = {toml_value(value)}"
    return f"{text:<48} # {entry['source']}"


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    table = effective(settings)
    path = find_config_file()
    if args.json:
        print(json.dumps({"file": None if path is None else str(path), "settings": table}, indent=2))
    else:
        print(as_toml(table, path))
    return 0
