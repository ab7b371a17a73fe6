"""Every command against every failure: one line on stderr, no traceback, the documented exit code
(docs/operations.md#exit-codes). In-process for the client commands; server starts as real processes."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from corral.cli.main import build_parser, main
from corral.simulator.command import build_parser as simulator_parser

from ..support import free_port

pytestmark = pytest.mark.unit

CLIENT_COMMANDS = [
    ["status", "0" * 32],
    ["watch", "0" * 32],
    ["cancel", "0" * 32],
    ["jobs"],
    ["workers"],
    ["queues"],
    ["drain", "gpu-1"],
    ["submit", "llama3", "hi"],
    ["submit", "llama3", "hi", "--wait"],
    ["submit", "llama3", "hi", "--follow"],
    ["submit", "llama3", "--file", "-"],
]
REDIS_COMMANDS = [["keys", "list"], ["keys", "create", "--scope", "read"], ["keys", "revoke", "x"]]


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    with (
        mock.patch.dict(os.environ, {**clean, **env}, clear=True),
        mock.patch.object(sys, "stdin", io.StringIO("hi\n")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main(argv)
    return int(exited.value.code or 0), out.getvalue(), err.getvalue()


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("argv", CLIENT_COMMANDS, ids=" ".join)
def test_an_api_that_is_down_is_named(argv: list[str]) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    # the URL from CORRAL_API_URL, or from --api-url (which wins)
    env, extra = ({}, ["--api-url", down]) if argv[0] == "status" else ({"CORRAL_API_URL": down}, [])
    code, _, stderr = run([*argv, *extra], {"CORRAL_API_URL": "http://127.0.0.1:1", **env})
    assert code == 3
    assert f"the API is unavailable at {down} (" in one_line(stderr)


@pytest.mark.parametrize("argv", REDIS_COMMANDS, ids=" ".join)
def test_a_redis_that_is_down_is_named(argv: list[str], tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-redis.sock"
    code, _, stderr = run(argv, {"CORRAL_REDIS_URL": url})
    assert code == 3
    assert one_line(stderr).startswith(f"corral keys: Redis at {url} does not answer (")


@pytest.mark.parametrize(
    "argv", [*CLIENT_COMMANDS, *REDIS_COMMANDS, ["up"], ["api"], ["worker"]], ids=" ".join
)
def test_bad_settings_are_one_line(argv: list[str]) -> None:
    code, _, stderr = run(argv, {"CORRAL_API_PORT": "eighty", "CORRAL_WORKER_SLOTS": "0"})
    assert code == 2
    line = one_line(stderr)
    assert "invalid settings: " in line and "CORRAL_API_PORT:" in line and "CORRAL_WORKER_SLOTS:" in line


def test_a_bug_is_one_line_and_exit_1() -> None:
    with mock.patch("corral.cli.remote.api_client", side_effect=ZeroDivisionError("boom")):
        code, _, stderr = run(["workers"], {})
    assert code == 1
    assert one_line(stderr) == (
        "corral workers: unexpected error: ZeroDivisionError: boom (CORRAL_LOG_LEVEL=DEBUG shows where)"
    )


def test_server_starts_that_cannot_work(tmp_path: Path) -> None:
    """A short API key (api, up), a port in use (api, up, simulate), a Redis that does not answer (up): nothing
    starts."""
    nowhere = {"CORRAL_REDIS_URL": f"unix://{tmp_path}/no-redis.sock"}
    short = {**nowhere, "CORRAL_API_KEYS": "too-short:admin"}
    before = signal.getsignal(signal.SIGINT)  # (ignored when the suite runs in a background job)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        cases = [
            (short, ["api"], 2, "corral api: CORRAL_API_KEYS: each key needs 16+ characters"),
            (short, ["up"], 2, "corral up: CORRAL_API_KEYS: each key needs 16+ characters"),
            (nowhere, ["api", "--port", busy], 2, f"corral api: port {busy} on 127.0.0.1 is in use"),
            (nowhere, ["up", "--port", busy], 2, f"another port: corral up --port {int(busy) + 1}"),
            (nowhere, ["simulate", "--port", busy], 2, f"corral simulate: port {busy} on 127.0.0.1 is in use"),
            (nowhere, ["up", "--port", str(free_port())], 3,
             f"corral up: Redis at unix://{tmp_path}/no-redis.sock does not answer"),
        ]  # fmt: skip
        for env, argv, code, message in cases:
            with mock.patch("subprocess.Popen", side_effect=AssertionError("nothing may start")):
                ran = run(argv, env)
            assert ran[0] == code, (argv, ran)
            assert message in one_line(ran[2]), argv
    assert signal.getsignal(signal.SIGINT) is before  # `up` put back the handlers


def options(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        choices = action.choices if isinstance(action.choices, dict) else {}
        for name, sub in choices.items():
            found += options(sub, f"{path} {name}")
        if not choices and action.dest != "help":
            found.append((path, action))
    return found


def test_every_option_has_help() -> None:
    every = options(build_parser(), "corral") + options(simulator_parser(), "corral simulate")
    assert len(every) > 60
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in every if not a.help]
    assert not missing


def test_submit_names() -> None:
    parse = build_parser().parse_args
    args = parse(["submit", "llama3", "hi", "--queue-anyway", "--wait", "--api", "http://h:1"])
    assert (args.queue_anyway, args.wait, args.follow, args.api_url) == (True, True, False, "http://h:1")
    assert parse(["submit", "llama3", "hi", "--stream"]).follow is True
    code, _, stderr = run(["submit", "llama3", "hi", "--wait", "--follow"], {})
    assert code == 2 and "--follow already waits" in stderr


def test_ctrl_c_in_a_client_command_is_quiet() -> None:
    with mock.patch("corral.cli.remote.api_client", side_effect=KeyboardInterrupt):
        code, _, stderr = run(["workers"], {})
    assert (code, stderr) == (130, "")


def test_a_child_whose_parent_is_already_gone_ends_itself() -> None:
    """The race ``tie_to_parent`` closes: ``up`` died between the fork and the tie (pid 1 is not our parent)."""
    code = "from corral.cli.lifeline import tie_to_parent; tie_to_parent(); print('outlived')"
    ran = subprocess.run([sys.executable, "-c", code], env={**os.environ, "_CORRAL_PARENT": "1:15"},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ran.returncode == -signal.SIGTERM and "outlived" not in ran.stdout


def test_redis_refusing_a_command_is_one_line_and_exit_2() -> None:
    from redis.exceptions import NoPermissionError

    refused = NoPermissionError("this user has no permissions to run the 'scan' command")
    with mock.patch("corral.api.apikeys.list_keys", side_effect=refused):
        code, _, stderr = run(["keys", "list"], {"CORRAL_REDIS_URL": "redis://api:secret@127.0.0.1:1/0"})
    assert code == 2
    assert one_line(stderr) == ("corral keys: Redis at redis://api:***@127.0.0.1:1/0 refused: this user has no "
                                "permissions to run the 'scan' command")  # fmt: skip
