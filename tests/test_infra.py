"""The deployment files hold together: compose files, systemd units and their env file, the Prometheus scrape
config and the Grafana dashboard (every metric it plots is one ``/metrics`` serves)."""

from __future__ import annotations

import asyncio
import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from corral.api.routes.metrics import Snapshot, job_families, timing_families, worker_families
from corral.common.histograms import HISTOGRAMS, JobTiming, timing_increments
from corral.common.settings import Settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
HOST2_ENV = {"CORRAL_REDIS_URL": "redis://redis-host:6379/0", "CORRAL_WORKER_ID": "gpu-2"}


def compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def test_compose_yaml_structure() -> None:
    services = compose("compose.yaml")["services"]
    assert set(services) == {"redis", "api", "ollama", "worker"}
    redis, api, ollama, worker = (services[n] for n in ("redis", "api", "ollama", "worker"))
    assert worker["network_mode"] == "service:ollama" and "ports" not in worker
    assert worker["environment"]["CORRAL_OLLAMA_URL"] == "http://127.0.0.1:11434"
    conf = next(v for v in redis["volumes"] if v.startswith("./infra/redis.conf:"))
    assert conf.split(":")[1] in redis["command"] and (ROOT / "infra" / "redis.conf").exists()
    for name in ("api", "worker"):
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile"
        assert services[name]["environment"]["CORRAL_REDIS_URL"] == "redis://redis:6379/0"
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        for needed, condition in (service.get("depends_on") or {}).items():
            assert needed in services and condition == {"condition": "service_healthy"}, name
    assert worker["depends_on"].keys() == {"redis", "ollama"} and api["depends_on"].keys() == {"redis"}
    assert ollama["image"].startswith("ollama/ollama")
    assert api["ports"] == ["127.0.0.1:8000:8000"]


def test_second_host_compose_points_a_worker_at_the_first_hosts_redis() -> None:
    services = compose("compose.host2.yaml")["services"]
    assert set(services) == {"ollama", "worker"}
    worker = services["worker"]
    assert worker["network_mode"] == "service:ollama"
    assert worker["environment"]["CORRAL_REDIS_URL"].startswith("${CORRAL_REDIS_URL:?")  # required
    assert worker["environment"]["CORRAL_WORKER_ID"].startswith("${CORRAL_WORKER_ID:?")
    assert worker["healthcheck"] == compose("compose.yaml")["services"]["worker"]["healthcheck"]


def compose_tool() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.parametrize("name", ["compose.yaml", "compose.host2.yaml"])
def test_compose_config_when_the_tool_is_installed(name: str) -> None:
    """The structure checks above always run; this adds Compose's own validation where Compose exists."""
    tool = compose_tool()
    loaded = compose(name)
    assert loaded["services"] and all("image" in s or "build" in s for s in loaded["services"].values())
    if tool is None:
        return
    env = {**HOST2_ENV, "PATH": "/usr/bin:/bin:/usr/local/bin"}
    result = subprocess.run([*tool, "-f", name, "config", "--quiet"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((INFRA / "systemd" / name).read_text())
    return parser


@pytest.mark.parametrize(
    ("name", "part"),
    [("corral-api.service", "api"), ("corral-worker.service", "worker"), ("corral-fleet.service", "fleet")],
)
def test_systemd_units(name: str, part: str) -> None:
    service = unit(name)["Service"]
    assert service["ExecStart"].endswith(f"/bin/corral {part}")
    assert service["EnvironmentFile"] == "/etc/corral/corral.env"
    assert service["User"] == "corral" and service["Restart"] in ("on-failure", "always")
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"
    if part in ("worker", "fleet"):  # SIGTERM drains: the stop timeout leaves a job its whole default timeout
        assert int(service["TimeoutStopSec"]) > Settings().job_timeout
    if part == "worker":
        assert "ollama.service" in unit(name)["Unit"]["After"]


def test_systemd_env_file_sets_only_real_settings() -> None:
    fields = {f"CORRAL_{name.upper()}" for name in Settings.model_fields}
    names = []
    for line in (INFRA / "systemd" / "corral.env").read_text().splitlines():
        line = line.strip().lstrip("#").strip()
        if re.fullmatch(r"CORRAL_[A-Z_]+=.*", line):
            names.append(line.split("=", 1)[0])
    assert names and set(names) <= fields, set(names) - fields
    assert "CORRAL_REDIS_URL" in names


def test_dockerfile_runs_as_a_user_with_a_healthcheck() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", text, re.M) and "HEALTHCHECK" in text


async def served_metric_names() -> set[str]:
    """Every sample name ``/metrics`` serves, from the same family builders, with one of each observation."""
    client = fakeredis.FakeAsyncRedis()
    timing = JobTiming("m:latest", "succeeded", 1.0, queue_wait=0.1, first_token=0.2, eval_count=5,
                       eval_duration_ns=10**9)  # fmt: skip
    for key, field, amount in timing_increments(
        timing
    ):  # what FINISH's timing record does (fakeredis runs no Lua)
        await (client.hincrbyfloat if isinstance(amount, float) else client.hincrby)(key, field, amount)
    worker = {"id": "w", "alive": True, "healthy": True, "slots_total": 1, "slots_busy": 0, "cpu_percent": 1.0,
              "ram_used": 1}  # fmt: skip
    families = [*job_families({}), *worker_families([worker]), *await timing_families(client)]
    await client.aclose()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}


def test_grafana_dashboard_plots_only_served_metrics() -> None:
    dashboard = json.loads((INFRA / "grafana" / "corral-dashboard.json").read_text())
    served = asyncio.run(served_metric_names()) | {"corral_queue_depth"}
    assert {h.name + "_bucket" for h in HISTOGRAMS} <= served
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\bcorral_[a-z_]+", target["expr"]))
    assert used and used <= served, used - served
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)


def test_prometheus_scrape_config() -> None:
    config = yaml.safe_load((INFRA / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "corral"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]


def test_the_shipped_redis_conf_is_infras() -> None:
    """`corral redis` and the test fixtures read the copy in the package; compose and systemd read infra's."""
    assert (ROOT / "cli" / "redis.conf").read_bytes() == (ROOT / "infra" / "redis.conf").read_bytes()
