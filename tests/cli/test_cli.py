"""`corral up` from nothing (embedded Redis, simulator, API, worker) and the CLI against it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from corral.simulator import expected_text

from ..support import ROOT, base_env, free_port, wait_for

pytestmark = pytest.mark.integration


def corral(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *argv], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # fmt: skip


def test_up_starts_everything_and_the_cli_works(tmp_path: Path) -> None:
    api_port, redis_port, sim_port, no_ollama = free_port(), free_port(), free_port(), free_port()
    env = base_env(f"redis://127.0.0.1:{redis_port}/0", api_port=api_port, data_dir=tmp_path / "data",
                   ollama_url=f"http://127.0.0.1:{no_ollama}")  # fmt: skip
    env["CORRAL_API"] = f"http://127.0.0.1:{api_port}"
    (tmp_path / "corral.toml").write_text('[worker]\nid = "demo"\n')  # the worker `up` starts reads it too
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "corral", "up", "--sim-port", str(sim_port), "--config",
                           str(tmp_path / "corral.toml")], env=env, stdout=log, stderr=subprocess.STDOUT,
                          cwd=ROOT)  # fmt: skip
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_for(lambda: httpx.get(base + "/workers").json()["workers"], timeout=60, what="corral up")
        response = httpx.post(base + "/jobs", json={"model": "llama3", "prompt": "hi"})
        assert response.status_code == 202
        streamed = corral(env, "submit", "llama3", "hello from the cli", "--stream")
        assert streamed.returncode == 0, streamed.stderr
        assert streamed.stdout.strip() == expected_text("llama3", "hello from the cli")
        job_id = corral(env, "submit", "llama3", "quiet").stdout.strip()
        status = wait_for(lambda: (v := json.loads(corral(env, "status", job_id).stdout))["status"] == "succeeded"
                          and v, what="cli status")  # fmt: skip
        assert status["text"] == expected_text("llama3", "quiet")
        assert json.loads(corral(env, "workers", "--json").stdout)["workers"][0]["id"] == "demo"
        workers = corral(env, "workers").stdout.splitlines()
        assert workers[0].split()[:3] == ["WORKER", "LIVE", "STATE"] and workers[1].startswith("demo")
        assert "llama3:latest" in corral(env, "queues").stdout
        assert "ollama:llama3:latest" in corral(env, "queues", "--json").stdout
        missing = corral(env, "status", "0" * 32)
        assert missing.returncode == 2 and "not found" in missing.stderr
        unknown_model = corral(env, "submit", "nope", "x")
        assert unknown_model.returncode == 2 and "model 'nope:latest' not found" in unknown_model.stderr
        assert (tmp_path / "data" / "redis").exists()
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 3  # redis, simulator, the api with its worker
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        log.close()
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    aof = list((tmp_path / "data" / "redis").rglob("appendonly.aof*"))
    assert aof, "AOF is on: the embedded Redis wrote an append-only file"
