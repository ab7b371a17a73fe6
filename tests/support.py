"""Helpers for tests that run real processes: free ports, child processes with logs, bounded waits."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free port below the kernel's ephemeral range: one the kernel picks (a bind to port 0) may be any client
    connection's local port a moment later, before the server it is meant for binds it (seen as EADDRINUSE: an API
    of tests/worker/test_unavailable.py, 2026-12-07)."""
    return free_port_block(1)


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive free ports, below the kernel's ephemeral range (see ``free_port``)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, low - n)
        socks = [socket.socket() for _ in range(n)]
        try:
            for i, sock in enumerate(socks):
                sock.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {n} consecutive free ports below {low}")


def wait_for(
    predicate: Callable[[], T], timeout: float = 15.0, what: str = "condition", step: float = 0.02
) -> T:
    """Poll until ``predicate`` returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (OSError, httpx.HTTPError, redis.ConnectionError, redis.BusyLoadingError):
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


CORRAL = (sys.executable, "-m", "corral")


class Child:
    """A child process with its log file: ``corral`` with ``argv``, or another ``command``'s."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path,
                 command: tuple[str, ...] = CORRAL) -> None:  # fmt: skip
        self.name = name
        self.argv = argv
        self.env = env
        self.command = command
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [*self.command, *self.argv],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode if self.process else None


def base_env(redis_url: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["CORRAL_REDIS_URL"] = redis_url
    env["CORRAL_CONFIG"] = ""  # no configuration file: not a ./corral.toml a developer keeps in the checkout
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in settings.items():
        env[f"CORRAL_{key.upper()}"] = str(value)
    return env


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
