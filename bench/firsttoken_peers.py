"""Other dispatchers in the first-token benchmark
(``python -m bench.firsttoken --peers bare,bare2,roundrobin,litellm,herd``): each in front of simulators of its own
with the settings of Corral's (20 ms to the first token), each route paired with the engine called directly the way
that dispatcher calls it.

- ``bare``: ``bench/bareproxy.py``, the smallest streaming HTTP/1.1 forwarder, the floor of any one process in the
  path: ``/api/chat`` in front of an Ollama simulator, ``/v1/chat/completions`` in front of an OpenAI-flavoured one.
- ``bare2``: two of those forwarders one behind the other (client → forwarder → forwarder → engine), the floor of
  any dispatcher with two processes on a first token's path, as Corral has (its API and the worker beside the
  engine), whatever they do.
- ``roundrobin``: ``bench/proxy.py`` (Starlette + httpx) as the scheduling benchmark runs it, the same two routes.
- ``litellm``: LiteLLM's proxy server, ``/v1/chat/completions`` with an ``ollama_chat/`` deployment (it calls
  Ollama's ``/api/chat``, as Corral's worker does for that route).
- ``herd``: ollama-herd's router and one node in strict mode (``X-Fleet-No-Fallback: true``), ``/api/chat``; it
  needs a network namespace of its own (its router speaks mDNS), so the benchmark runs itself again under
  ``unshare --net`` as ``bench.scheduling`` does.

LiteLLM and ollama-herd run from virtualenvs of their own under ``.corral/peers/``, installed on first use
(``bench/peers.py``).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

from .core import TTFT_SIM
from .dispatchers import spawn, start_herd, start_litellm
from .firsttoken import ROUTES, Lane, Route, Stack, sse_token
from .harness import ROOT, Rig, free_port, wait
from .peers import HERD, LITELLM, Peer, install
from .workloads import Workload

OLLAMA_CHAT = ROUTES[1]  # /api/chat, against the engine's /api/chat
OPENAI_CHAT = ROUTES[2]  # /v1/chat/completions, against the engine's /api/chat (Corral's worker, LiteLLM)
# /v1/chat/completions, against an OpenAI-flavoured engine's own (a proxy that only passes it on)
OPENAI_PASS = Route("/v1/chat/completions", "/v1/chat/completions", "/v1/chat/completions", True, sse_token,
                    "text/event-stream", sse_token, "text/event-stream")  # fmt: skip
MODEL = "llama3"
ONE_MODEL = Workload("ttft", "", [f"{MODEL}:latest"], {}, [0.0], [1.0])  # what start_herd waits for


class Engines:
    """The peers' two simulators: Ollama's API and OpenAI's (started on first use)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self._ollama = ""
        self._openai = ""

    def ollama(self) -> str:
        if not self._ollama:
            self._ollama = self.rig.simulator(**TTFT_SIM)
        return self._ollama

    def openai(self) -> str:
        if not self._openai:
            port = free_port()
            argv = ["simulate", "--port", str(port), "--models", f"{MODEL}:latest", "--flavor", "openai"]
            self.rig.spawn(
                argv + [a for k, v in TTFT_SIM.items() for a in (f"--{k.replace('_', '-')}", str(v))]
            )
            self._openai = f"http://127.0.0.1:{port}"
            wait(lambda: listening(self._openai))
        return self._openai


def listening(url: str) -> bool:
    host, port = url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=1):
        return True


def forwarder(rig: Rig, name: str, argv: list[str], upstream: str) -> str:
    """A proxy of this benchmark (``python -m bench.<module> ...``) in front of ``upstream``: its URL."""
    port = free_port()
    spawn(rig, name, [sys.executable, "-m", *argv, "--port", str(port), upstream], {"PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    wait(lambda: listening(url))
    return url


def proxy_lanes(rig: Rig, engines: Engines, name: str, argv: list[str]) -> list[Lane]:
    """A proxy that passes requests on as they are: one in front of each simulator, a route each."""
    ollama, openai = engines.ollama(), engines.openai()
    return [
        Lane(OLLAMA_CHAT, forwarder(rig, f"{name}-ollama", argv, ollama), ollama),
        Lane(OPENAI_PASS, forwarder(rig, f"{name}-openai", argv, openai), openai),
    ]


def bare(rig: Rig, engines: Engines) -> Stack:
    return Stack("bare proxy (asyncio)", proxy_lanes(rig, engines, "bare", ["bench.bareproxy"]))


def bare_chain(rig: Rig, engines: Engines) -> Stack:
    argv = ["bench.bareproxy"]
    ollama, openai = engines.ollama(), engines.openai()
    front = {url: forwarder(rig, f"bare2-{name}", argv, forwarder(rig, f"bare2-{name}-near", argv, url))
             for name, url in (("ollama", ollama), ("openai", openai))}  # fmt: skip
    return Stack(
        "two bare proxies in a row",
        [Lane(OLLAMA_CHAT, front[ollama], ollama), Lane(OPENAI_PASS, front[openai], openai)],
    )


def roundrobin(rig: Rig, engines: Engines) -> Stack:
    argv = ["bench.proxy", "--policy", "round-robin"]
    return Stack("round-robin proxy", proxy_lanes(rig, engines, "round-robin", argv))


def installed(peer: Peer) -> None:
    """Install ``peer`` into its own virtualenv if it is not there yet (as ``make bench-scheduling`` does)."""
    why = install(peer)
    if why:
        raise SystemExit(f"{peer.name} could not be installed: {why}")


def litellm(rig: Rig, engines: Engines) -> Stack:
    installed(LITELLM)
    work = Workload("ttft", "", [MODEL], {}, [0.0], [1.0])
    target = start_litellm(rig, [engines.ollama()], work, "simple-shuffle", provider="ollama_chat")
    return Stack(
        "LiteLLM proxy", [Lane(OPENAI_CHAT, target.url, engines.ollama(), tuple(target.headers.items()))]
    )


def herd(rig: Rig, engines: Engines) -> Stack:
    installed(HERD)
    target = start_herd(rig, [engines.ollama()], ONE_MODEL)
    return Stack(
        "ollama-herd (strict)",
        [Lane(OLLAMA_CHAT, target.url, engines.ollama(), tuple(target.headers.items()))],
    )


PEERS: dict[str, Callable[[Rig, Engines], Stack]] = {
    "bare": bare,
    "bare2": bare_chain,
    "roundrobin": roundrobin,
    "litellm": litellm,
    "herd": herd,
}


def parse(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)} (choose from {','.join(PEERS)})")
    return names


def start(names: list[str]) -> tuple[Rig, list[Stack]]:
    """The peers ``names``, in one rig (its tmp directory keeps their logs)."""
    rig = Rig()
    engines = Engines(rig)
    try:
        return rig, [PEERS[name](rig, engines) for name in names]
    except BaseException:
        rig.close()
        raise
