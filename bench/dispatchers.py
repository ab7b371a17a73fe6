"""The dispatchers of the scheduling benchmark, each started in front of the same fresh simulators.

Each ``start_*`` returns a ``Target``: where the load generator sends its requests and in which API. Peers run as
their own processes at their documented settings; Corral at its defaults (``corral``) and with the settings of
earlier reports (``corral-tuned``), so both are on the table.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from .harness import ROOT, Rig, free_port, wait
from .peers import HERD, LITELLM, Peer
from .workloads import Workload


@dataclass(frozen=True)
class Target:
    url: str
    api: str = "ollama"  # "ollama": POST /api/generate, NDJSON; "openai": POST /v1/chat/completions, SSE
    headers: dict[str, str] = field(default_factory=dict)


def spawn(rig: Rig, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    log = open(rig.tmp / f"{name}.log", "wb")  # noqa: SIM115
    child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=rig.tmp,
                             env={**os.environ, **(env or {})})  # fmt: skip
    rig.children.append(child)


def start_proxy(rig: Rig, sims: list[str], work: Workload, policy: str) -> Target:
    """``bench/proxy.py``: round-robin, least-busy or a static model -> host map."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.proxy", "--port", str(port), "--policy", policy]
    if policy == "static":
        argv += ["--assign", json.dumps(work.static_assignment())]
    spawn(rig, f"proxy-{policy}", [*argv, *sims], {"PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    wait(lambda: httpx.get(url + "/api/tags").status_code == 200)
    return Target(url)


TUNED = {"heartbeat_interval": 0.25, "heartbeat_ttl": 3, "model_refresh_interval": 2, "cold_delay": 0.5,
         "switch_delay": 1.0, "worker_slots": 8}  # fmt: skip


# the ablation: the defaults plus one group of TUNED at a time (``--only corral+heartbeat …``), to find which matters
ABLATION = {
    "heartbeat": {"heartbeat_interval": 0.25, "heartbeat_ttl": 3},
    "refresh": {"model_refresh_interval": 2},
    "delays": {"cold_delay": 0.5, "switch_delay": 1.0},
    "slots": {"worker_slots": 8},
    "capacity": {},  # max_loaded_models: the workload's
}


def start_corral(rig: Rig, sims: list[str], work: Workload, tuned: bool, only: str = "") -> Target:
    """The API and one worker per host, at the defaults or at ``TUNED`` (with the host's model capacity given,
    as docs/scheduling.md says to), or at the defaults plus one ``ABLATION`` group."""
    capacity = {"max_loaded_models": work.sim_options["max_loaded"]}
    settings = {**TUNED, **capacity} if tuned else {}
    if only:
        settings = capacity if only == "capacity" else ABLATION[only]
    for i, sim in enumerate(sims):
        rig.worker(sim, f"sched-w{i}", **settings)
    url, _ = rig.api(**settings)
    return Target(url)


def need(peer: Peer) -> None:
    if not peer.program.exists():
        raise RuntimeError(f"{peer.name} is not installed: python -m bench.peers")


def start_herd(rig: Rig, sims: list[str], work: Workload) -> Target:
    """ollama-herd: its router and one ``herd-node`` per simulated host, pointed at each other (no mDNS: the
    benchmark runs in a network namespace of its own), in strict mode so it never answers with another model."""
    need(HERD)
    port = free_port()
    home = rig.tmp / "herd"
    env = {"HOME": str(home), "FLEET_DATA_DIR": str(home / "router"), "FLEET_NODE_TELEMETRY": "false"}
    spawn(rig, "herd", [str(HERD.program), "--host", "127.0.0.1", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    wait(lambda: httpx.get(url + "/fleet/status").status_code == 200, timeout=60)
    for i, sim in enumerate(sims):
        node_env = {**env, "FLEET_NODE_DATA_DIR": str(home / f"node{i}")}
        argv = [str(HERD.venv / "bin" / "herd-node"), "--node-id", f"sim{i}", "--ollama-host", sim,
                "--router-url", url]  # fmt: skip
        spawn(rig, f"herd-node{i}", argv, node_env)

    def fleet_ready() -> bool:
        nodes = httpx.get(url + "/fleet/status").json()["nodes"]
        seen = [set((n.get("ollama") or {}).get("models_available") or []) for n in nodes]
        return len(nodes) == len(sims) and all(set(work.models) <= s for s in seen)

    wait(fleet_ready, timeout=60)
    return Target(url, headers={"X-Fleet-No-Fallback": "true"})


def start_litellm(
    rig: Rig, sims: list[str], work: Workload, strategy: str, provider: str = "ollama"
) -> Target:
    """LiteLLM's proxy server (its Router behind its own HTTP server, as its docs run it): one ``<provider>/<model>``
    deployment per host for each model name (``ollama`` calls Ollama's /api/generate, ``ollama_chat`` its
    /api/chat), the given routing strategy, its default retries and cooldowns."""
    need(LITELLM)
    deployments = [{"model_name": m, "litellm_params": {"model": f"{provider}/{m}", "api_base": sim}}
                   for m in work.models for sim in sims]  # fmt: skip
    config = {"model_list": deployments, "router_settings": {"routing_strategy": strategy},
              "litellm_settings": {"request_timeout": 600, "telemetry": False}}  # fmt: skip
    path = rig.tmp / f"litellm-{strategy}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    key = "sk-" + secrets.token_hex(32)  # it refuses to start without one, as a deployment would have
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": key}
    spawn(rig, f"litellm-{strategy}", [str(LITELLM.program), "--config", str(path), "--host", "127.0.0.1",
                                       "--port", str(port)], env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait(lambda: httpx.get(url + "/health/liveliness").status_code == 200, timeout=600)  # a slow import
    return Target(url, api="openai", headers={"Authorization": f"Bearer {key}"})


Starter = Callable[[Rig, list[str], Workload], Target]
DISPATCHERS: dict[str, tuple[str, Starter]] = {
    "round-robin": ("round-robin proxy (baseline)", lambda r, s, w: start_proxy(r, s, w, "round-robin")),
    "least-busy": ("least-busy proxy", lambda r, s, w: start_proxy(r, s, w, "least-busy")),
    "static": ("static model -> host map", lambda r, s, w: start_proxy(r, s, w, "static")),
    "herd": ("ollama-herd (strict)", start_herd),
    "litellm-shuffle": (
        "LiteLLM proxy, simple-shuffle",
        lambda r, s, w: start_litellm(r, s, w, "simple-shuffle"),
    ),
    "litellm-least-busy": ("LiteLLM proxy, least-busy", lambda r, s, w: start_litellm(r, s, w, "least-busy")),
    "corral": ("Corral, defaults", lambda r, s, w: start_corral(r, s, w, tuned=False)),
    "corral-tuned": ("Corral, tuned", lambda r, s, w: start_corral(r, s, w, tuned=True)),
}
ABLATIONS: dict[str, tuple[str, Starter]] = {
    f"corral+{group}": (
        f"Corral, defaults + tuned {group}",
        lambda r, s, w, g=group: start_corral(r, s, w, tuned=False, only=g),
    )
    for group in ABLATION
}


def peer_missing(name: str) -> str:
    """'' when dispatcher ``name`` can run here, else why not."""
    peer = HERD if name == "herd" else LITELLM if name.startswith("litellm") else None
    if peer and not peer.program.exists():
        return f"{peer.name} not installed (python -m bench.peers)"
    return ""


def in_own_netns() -> bool:
    """True when this process has no network interface but loopback: ollama-herd's router advertises itself
    over mDNS (multicast on every interface), which must not leave this machine."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]  # this process's namespace (not /sys's)


def rerun_in_netns(module: str, argv: list[str]) -> None:
    """Run ``python -m module argv`` again in a network namespace with only loopback, in place of this process (its
    exit status is the run's); returns at once when this process is in one already."""
    if in_own_netns():
        return
    if os.environ.get("CORRAL_BENCH_NETNS"):
        raise SystemExit(f"{module}: still not in a network namespace of its own after unshare")
    os.environ["CORRAL_BENCH_NETNS"] = "1"
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]
    script = 'ip link set lo up 2>/dev/null || true; exec "$0" "$@"'
    os.execvp(unshare[0], [*unshare, "sh", "-c", script, sys.executable, "-m", module, *argv])
