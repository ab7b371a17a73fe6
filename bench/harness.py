"""Processes and measurements shared by the benchmarks: a throwaway Redis, simulators, workers, APIs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from corral.cli.embedded_redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def corral_command() -> list[str]:
    """How to start the ``corral`` command of the tree at ``ROOT`` (bench.ab points it at other trees): that
    tree's own ``.venv`` when it has one (an editable install runs the code of the tree it was made from), and
    ``common.cli`` for trees from before the one ``corral`` package."""
    python = ROOT / ".venv" / "bin" / "python"
    module = "common.cli" if (ROOT / "common" / "cli.py").exists() else "corral"
    return [str(python) if python.exists() else sys.executable, "-m", module]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, httpx.HTTPError, redis.ConnectionError):
            pass
        time.sleep(0.02)
    raise TimeoutError("benchmark setup did not become ready")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Rig:
    """A Redis plus the corral processes of one benchmark scenario."""

    # how Corral's processes reach Redis: "tcp", loopback TCP (as `corral up` connects them), or "unix", a unix
    # socket of the Redis (measured side by side in bench.ab: no difference in the added time to first token)
    transport: str = "tcp"
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="corral-bench-")))
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server: RedisServer | None = None

    def __post_init__(self) -> None:
        self.server = RedisServer(
            port=free_port(), data_dir=self.tmp / "redis", unix_socket=self.transport == "unix"
        ).start()
        self.redis = redis.Redis.from_url(self.server.url)
        self.url = self.server.unix_url or self.server.url  # (a unix_url only with transport "unix")

    def spawn(self, argv: list[str], **settings: Any) -> subprocess.Popen[bytes]:
        assert self.server is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["CORRAL_REDIS_URL"] = self.url
        env["CORRAL_LOG_LEVEL"] = "WARNING"
        env.update({f"CORRAL_{k.upper()}": str(v) for k, v in settings.items()})
        log = open(self.tmp / f"{len(self.children)}-{argv[0]}.log", "wb")  # noqa: SIM115
        child = subprocess.Popen([*corral_command(), *argv], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        self.children.append(child)
        return child

    def simulator(self, models: str = "llama3:latest", **options: Any) -> str:
        port = free_port()
        argv = ["simulate", "--port", str(port), "--models", models]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        self.spawn(argv)
        url = f"http://127.0.0.1:{port}"
        wait(lambda: httpx.get(url + "/api/version").status_code == 200)
        return url

    def worker(self, ollama_url: str, worker_id: str, **settings: Any) -> subprocess.Popen[bytes]:
        child = self.spawn(["worker"], ollama_url=ollama_url, worker_id=worker_id, **settings)
        wait(lambda: self.redis.hget(f"corral:worker:{worker_id}", "healthy") == b"1")
        return child

    def api(self, worker_in_process: bool = False, **settings: Any) -> tuple[str, subprocess.Popen[bytes]]:
        """An API; ``worker_in_process``: with a worker in its process (``corral api --worker``)."""
        port = free_port()
        child = self.spawn(
            ["api", "--port", str(port), *(["--worker"] if worker_in_process else [])], **settings
        )
        url = f"http://127.0.0.1:{port}"
        wait(lambda: httpx.get(url + "/readyz").status_code == 200)
        if worker_in_process:
            worker_id = settings["worker_id"]
            wait(lambda: self.redis.hget(f"corral:worker:{worker_id}", "healthy") == b"1")
        return url, child

    def close(self) -> None:
        for child in reversed(self.children):
            child.terminate()
        for child in self.children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        self.redis.close()
        if self.server:
            self.server.kill()


def rss_mb(process: subprocess.Popen[bytes]) -> float:
    return psutil.Process(process.pid).memory_info().rss / 2**20


def median_ci(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free 95 % confidence interval of the median: the order statistics ``z`` binomial standard
    deviations either side of the middle (the median lies between ranks k and n-1-k with ~95 % probability)."""
    ordered = sorted(values)
    n = len(ordered)
    k = max(0, int(n / 2 - z * n**0.5 / 2))
    return ordered[k], ordered[n - 1 - k]


def summary(values: list[float]) -> dict[str, float]:
    lo, hi = median_ci(values)
    return {"p50": statistics.median(values), "p95": pct(values, 0.95), "n": len(values), "lo": lo, "hi": hi}
