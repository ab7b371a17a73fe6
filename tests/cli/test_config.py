"""``corral config`` and ``--config``: the effective settings, where each came from, secrets masked; a bad file
stops every command with one line."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from corral.cli.main import main

pytestmark = pytest.mark.unit
SECRETS = (
    "hunter2-redis",
    "sk-backend-token",
    "tenant-secret",
    "admin-key-0123456789",
    "cli-key-0123456789abc",
)
FILE = f"""
[redis]
url = "redis://corral:{SECRETS[0]}@127.0.0.1:6390/0"
[api]
keys = ["{SECRETS[3]}:admin"]
port = 9001
[backend]
token = "{SECRETS[1]}"
headers = {{ "X-Tenant" = "{SECRETS[2]}" }}
[worker]
slots = 12
[cli]
api_key = "{SECRETS[4]}"
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CORRAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CORRAL_CONFIG", "")  # (restored after the test: --config sets it)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_config_shows_each_value_and_its_source_with_secrets_masked(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(FILE)
    monkeypatch.setenv("CORRAL_WORKER_SLOTS", "3")
    code, out, _ = run(capsys, "config", "--config", str(path))
    assert code == 0
    assert not any(secret in out for secret in SECRETS)
    shown = {line.split(" = ")[0]: line for line in out.splitlines() if " = " in line}
    assert shown["slots"].startswith("slots = 3 ") and shown["slots"].endswith("# env:CORRAL_WORKER_SLOTS")
    assert shown["port"].startswith("port = 9001 ") and shown["port"].endswith(f"# file:{path}")
    assert shown["job_timeout"].startswith("job_timeout = 600.0 ") and shown["job_timeout"].endswith(
        "# default"
    )
    assert 'url = "redis://corral:***@127.0.0.1:6390/0"' in out
    assert 'keys = ["***:admin"]' in out and 'token = "***"' in out and '"X-Tenant" = "***"' in out
    assert tomllib.loads(out)["worker"]["slots"] == 3  # the output is a TOML file itself

    code, out, _ = run(
        capsys, "--config", str(path), "config", "--json"
    )  # (the option before the command too)
    report = json.loads(out)
    assert code == 0 and report["file"] == str(path.resolve())
    settings = report["settings"]
    assert settings["worker_slots"] == {
        "value": 3,
        "source": "env:CORRAL_WORKER_SLOTS",
        "env": "CORRAL_WORKER_SLOTS",
    }
    assert (
        settings["api_port"]["source"] == f"file:{path.resolve()}" and settings["api_port"]["value"] == 9001
    )
    assert settings["api_keys"]["value"] == ["***:admin"] and settings["api_key"]["value"] == "***"
    assert not any(secret in out for secret in SECRETS)


@pytest.mark.parametrize("command", [["config"], ["workers"], ["keys", "list"], ["api"]])
def test_a_bad_file_stops_every_command_with_one_line(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("[worker]\nslots = 4\nslot = 5\n")
    code, out, err = run(capsys, *command, "--config", str(path))
    assert code == 2 and out == ""
    assert err == f"corral {command[0]}: {path.resolve()}: unknown key [worker] slot (did you mean slots?)\n"
    path.write_text("[worker]\nslots = 0\n")
    code, _, err = run(capsys, *command, "--config", str(path))
    assert code == 2
    slots = "[worker] slots: Input should be greater than or equal to 1"
    assert err == f"corral {command[0]}: invalid settings: {path.resolve()}: {slots}\n"


def test_a_bad_variable_is_named_as_the_variable(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("[worker]\nslots = 4\n")
    monkeypatch.setenv("CORRAL_WORKER_SLOTS", "0")
    code, _, err = run(capsys, "config", "--config", str(path))
    assert code == 2 and err.startswith(
        "corral config: invalid settings: CORRAL_WORKER_SLOTS: Input should be"
    )
    code, _, err = run(capsys, "config", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml not found" in err
