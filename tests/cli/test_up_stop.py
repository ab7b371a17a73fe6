"""Stopping ``corral up`` every way (SIGINT once, twice, SIGTERM, SIGKILL): no process and no port left behind,
running jobs back on their queue, and the next start works."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from ..support import ROOT, base_env, free_port, wait_for

pytestmark = pytest.mark.integration


class Up:
    """One ``corral up`` on fixed ports and a data dir, so a second one restarts the same stack."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.api_port, self.redis_port, self.sim_port = free_port(), free_port(), free_port()
        self.env = base_env(f"redis://127.0.0.1:{self.redis_port}/0", data_dir=tmp / "data", worker_id="up-stop",
                            ollama_url=f"http://127.0.0.1:{free_port()}")  # fmt: skip
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.children: list[psutil.Process] = []
        self.runs = 0

    def start(self) -> Up:
        self.runs += 1
        self.log = self.tmp / f"up-{self.runs}.log"
        with open(self.log, "wb") as out:
            argv = ["up", "--port", str(self.api_port), "--sim-port", str(self.sim_port)]
            self.process = subprocess.Popen([sys.executable, "-m", "corral", *argv], env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        wait_for(lambda: httpx.get(self.base + "/workers").json()["workers"], timeout=60, what="corral up")
        self.children = psutil.Process(self.process.pid).children(recursive=True)
        assert len(self.children) >= 3  # redis, simulator, the api with its worker
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def assert_nothing_left(self) -> None:
        def gone(process: psutil.Process) -> bool:  # an orphan may stay a zombie where pid 1 does not reap
            try:
                return process.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(
            lambda: all(gone(p) for p in self.children), what=f"no process left:\n{self.output()[-2000:]}"
        )
        for port in (self.api_port, self.redis_port, self.sim_port):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))  # free again


def test_stopping_up_every_way_leaves_nothing_and_it_starts_again(tmp_path: Path) -> None:
    """SIGINT twice (a job running), then SIGKILL, then SIGTERM; SIGINT once is test_cli's."""
    up = Up(tmp_path).start()
    try:
        # the simulator of `up` makes 50 tokens/s: this job runs well over a minute
        job = httpx.post(up.base + "/jobs", json={"model": "llama3", "prompt": "w " * 4000}).json()["id"]
        wait_for(lambda: httpx.get(f"{up.base}/jobs/{job}").json()["status"] == "running", what="running")
        up.signal(signal.SIGINT)
        wait_for(lambda: "Press Ctrl-C again to stop now" in up.output(), what="the drain notice")
        assert "the worker finishes 1 running job(s) (at most 605 s)" in up.output()
        wait_for(lambda: "s left at most (Ctrl-C again forces)" in up.output(), timeout=20, what="countdown")
        assert up.process is not None and up.process.poll() is None  # still draining
        up.signal(signal.SIGINT)
        assert up.wait() == 130
        assert "stopping now; running jobs go back to their queue" in up.output()
        assert "Traceback" not in up.output()
        up.assert_nothing_left()

        up.start()  # the forced job is back on its queue: the worker re-queued what its last life left
        view = wait_for(lambda: (v := httpx.get(f"{up.base}/jobs/{job}").json())["attempt"] == 2 and v,
                        what="the job re-queued")  # fmt: skip
        assert view["status"] in ("queued", "running")
        assert httpx.delete(f"{up.base}/jobs/{job}").status_code == 200
        up.signal(signal.SIGKILL)
        up.wait()
        up.assert_nothing_left()

        up.start()
        up.signal(signal.SIGTERM)  # no job running: a clean stop
        assert up.wait() == 0
        assert "Traceback" not in up.output()
        up.assert_nothing_left()
    finally:
        up.kill()
