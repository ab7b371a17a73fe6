"""Where a model operation runs: every host, named hosts, or ``replicas`` chosen from the heartbeats.

Pure: ``place`` takes the hosts as ``HostView`` values (``host_views`` builds them from ``GET /workers``' shape)
and answers the worker ids, best first. A host can take model operations when it is alive, active (not draining),
healthy, and its engine is Ollama (OpenAI-compatible engines have no model management API).

Replicas are chosen, in this order: hosts that already have the model (a pull there is a quick update; a load
there needs no download), the least busy (running jobs over slots), the most free memory (GPU when reported, else
RAM), then by id so that the choice is stable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest, ModelNotFound

KINDS = ("pull", "delete", "copy", "create", "load")


@dataclass(frozen=True)
class HostView:
    """What placement needs of one worker."""

    id: str
    usable: bool = True  # alive, active, healthy
    manages: bool = True  # its engine has a model management API (Ollama)
    models: frozenset[str] = field(default_factory=frozenset)
    loaded: frozenset[str] = field(default_factory=frozenset)
    busy: float = 0.0  # running jobs / slots
    free_memory: int = 0  # bytes


@dataclass(frozen=True)
class Placement:
    """Where to run: every host (``every``), the ``hosts`` named, or ``replicas`` of them (None: the default)."""

    hosts: tuple[str, ...] = ()
    every: bool = False
    replicas: int | None = None

    def describe(self) -> dict[str, Any]:
        if self.hosts:
            return {"hosts": list(self.hosts)}
        if self.every:
            return {"all": True}
        return {"replicas": self.replicas}


def free_memory(worker: dict[str, Any]) -> int:
    gpus = worker.get("gpu") or []
    if gpus:
        return (
            sum(max(0, int(g.get("memory_total_mib", 0)) - int(g.get("memory_used_mib", 0))) for g in gpus)
            * 2**20
        )
    return max(0, int(worker.get("ram_total") or 0) - int(worker.get("ram_used") or 0))


def host_views(workers: Iterable[dict[str, Any]]) -> list[HostView]:
    """``HostView``s from workers as ``registry.decode_worker`` gives them."""
    return [
        HostView(
            id=str(w["id"]),
            usable=bool(w.get("alive")) and w.get("state") == "active" and bool(w.get("healthy")),
            manages=w.get("backend", "ollama") == "ollama",
            models=frozenset(w.get("models") or ()),
            loaded=frozenset(w.get("loaded") or ()),
            busy=int(w.get("slots_busy") or 0) / max(1, int(w.get("slots_total") or 1)),
            free_memory=free_memory(w),
        )
        for w in workers
        if w.get("host") is not None  # an expired heartbeat hash: nothing known of it
    ]


def ranked(hosts: Iterable[HostView], model: str, warm: bool = False) -> list[HostView]:
    """Best first: has the model (``warm``: has it loaded), least busy, most free memory, id."""

    def key(h: HostView) -> tuple[int, float, int, str]:
        has = model in (h.loaded if warm else h.models)
        return (0 if has else 1, h.busy, -h.free_memory, h.id)

    return sorted(hosts, key=key)


def place(
    hosts: list[HostView], kind: str, model: str, placement: Placement, exclude: Iterable[str] = ()
) -> list[str]:
    """The worker ids to run ``kind`` of ``model`` on. Named hosts must exist and take model operations;
    ``delete``, ``copy`` and ``load`` go only to hosts that have the model (``copy``: the source). Raises
    ``ModelNotFound`` when no host has a model to delete, copy or load, ``InvalidRequest`` when nothing else fits."""
    if kind not in KINDS:
        raise InvalidRequest(f"unknown model operation {kind!r}")
    skip = set(exclude)
    able = [h for h in hosts if h.usable and h.manages and h.id not in skip]
    if kind in ("delete", "copy", "load"):
        able = [h for h in able if model in h.models]
    if placement.hosts:
        return named(hosts, able, placement.hosts, kind, model)
    if not able:
        if kind in ("delete", "copy", "load") and not any(model in h.models for h in hosts):
            raise ModelNotFound(model)
        raise InvalidRequest(f"no live worker can {kind} {model}")
    if placement.every or (kind in ("delete", "copy") and placement.replicas is None):
        return [h.id for h in ranked(able, model)]
    replicas = 1 if placement.replicas is None else placement.replicas
    if replicas <= 0:
        return [h.id for h in ranked(able, model)]
    return [h.id for h in ranked(able, model, warm=kind == "load")[:replicas]]


def named(
    hosts: list[HostView], able: list[HostView], wanted: tuple[str, ...], kind: str, model: str
) -> list[str]:
    known = {h.id: h for h in hosts}
    ok = {h.id for h in able}
    for host in wanted:
        if host not in known:
            raise InvalidRequest(f"no live worker {host!r}")
        if host not in ok:
            raise InvalidRequest(
                f"worker {host!r} cannot {kind} {model}: " + why_not(known[host], kind, model)
            )
    return list(dict.fromkeys(wanted))


def why_not(host: HostView, kind: str, model: str) -> str:
    if not host.usable:
        return "it is not alive, active and healthy"
    if not host.manages:
        return "its engine is OpenAI-compatible (model management is not supported there)"
    return "it does not have the model"
