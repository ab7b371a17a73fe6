"""``corral hosts …``, ``corral fleet`` and ``corral up --host``: what the commands send and start (the commands
against real processes: tests/worker/test_hosts_fleet.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from corral.cli import stack as stack_module
from corral.cli.children import Children, Signals
from corral.cli.hosts import host_body, host_rows
from corral.cli.main import build_parser
from corral.common.settings import Settings

pytestmark = pytest.mark.unit


def test_hosts_add_body_with_token_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["hosts", "add", "https://vllm:8000/v1", "--name", "v", "--token", "-",
                                      "--header", "X-A=1", "--header", "X-B=2", "--slots", "8"])  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO("tok-from-stdin\n"))
    assert host_body(args) == {"url": "https://vllm:8000/v1", "name": "v", "kind": "auto", "slots": 8,
                               "weight": 1.0, "max_loaded_models": 0, "verify": "true",
                               "token": "tok-from-stdin", "headers": "X-A=1,X-B=2"}  # fmt: skip


def test_hosts_ls_table() -> None:
    hosts = [{"name": "gpu-1", "url": "http://gpu-1:11434", "kind": "ollama", "slots": 4,
              "health": {"status": "serving", "slots_busy": 1, "models": ["llama3:latest"], "served_by": "box"}},
             {"name": "gpu-2", "url": "http://gpu-2:11434", "kind": "ollama", "slots": 2,
              "health": {"status": "waiting", "served_by": None}}]  # fmt: skip
    lines = host_rows(hosts).splitlines()
    assert lines[0].split() == ["HOST", "STATUS", "URL", "KIND", "SLOTS", "MODELS", "FLEET"]
    assert lines[1].split() == [
        "gpu-1",
        "serving",
        "http://gpu-1:11434",
        "ollama",
        "1/4",
        "llama3:latest",
        "box",
    ]
    assert lines[2].split() == ["gpu-2", "waiting", "http://gpu-2:11434", "ollama", "0/2", "-", "-"]


class Exited:
    returncode = 0

    def poll(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("argv", "last"),
    [
        (["up", "--host", "http://gpu-1:11434", "--host", "http://gpu-2:11434"],
         ("fleet", ["fleet", "--host=http://gpu-1:11434", "--host=http://gpu-2:11434"])),
        (["up", "--demo"], ("api", ["api", "--worker"])),
        (["up", "--demo", "--worker-process"], ("worker", ["worker"])),
    ],
)  # fmt: skip
def test_up_starts_the_worker_in_the_api_or_a_fleet_process_for_its_hosts(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], last: tuple[str, list[str]]
) -> None:
    started: list[tuple[str, list[str]]] = []

    def spawn(self: Any, name: str, argv: list[str], env: dict[str, str], kill_signal: int = 0) -> None:
        started.append((name, argv))

    monkeypatch.setattr(Children, "spawn", spawn)
    monkeypatch.setattr(stack_module, "wait_port", lambda *a, **k: None)
    monkeypatch.setattr(stack_module, "start_redis", lambda *a, **k: None)
    monkeypatch.setattr(stack_module, "port_free", lambda host, port: True)
    monkeypatch.setattr(stack_module, "port_open", lambda host, port: True)
    stack_module.start_parts(build_parser().parse_args(argv), Settings(), Children(), Signals())
    names = [name for name, _ in started]
    assert started[-1] == last and names.count("api") == 1
    assert ("simulator" in names) == ("--demo" in argv)


def test_up_serves_the_config_files_hosts_with_a_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        Children, "spawn", lambda self, name, argv, env, kill_signal=0: started.append((name, argv))
    )
    monkeypatch.setattr(stack_module, "wait_port", lambda *a, **k: None)
    monkeypatch.setattr(stack_module, "start_redis", lambda *a, **k: None)
    monkeypatch.setattr(stack_module, "port_free", lambda host, port: True)
    monkeypatch.setattr(stack_module, "port_open", lambda host, port: False)  # no local engine either
    settings = Settings(hosts='[{"url": "http://127.0.0.1:11501"}]')
    stack_module.start_parts(build_parser().parse_args(["up"]), settings, Children(), Signals())
    assert started[-1] == ("fleet", ["fleet"]) and "simulator" not in [name for name, _ in started]
