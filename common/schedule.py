"""Scheduling inside the Lua scripts: priorities, weighted fair share across submitters, warm-first pops.

Each model keeps its RQ list ``rq:queue:ollama:<model>`` with every queued id in arrival order (what RQ's tools,
the queue limit and ``GET /queues`` read). Beside it, an index decides the order of pops:

- one list per (model, priority, submitter) with that submitter's queued ids, oldest first;
- one zset per (model, priority) of the submitters with queued jobs, scored by the virtual start time of their
  next job (start-time fair queueing): a pop serves the lowest score, then moves that submitter on by
  ``1 / weight``; a submitter that becomes active starts at the virtual time of the last pop, so one job
  waits behind at most one job of each other submitter, however many they queued.

Priorities are strict (``high`` before ``normal`` before ``low``) but for aging: a lower level with jobs that
has not been served for ``CORRAL_PRIORITY_AGING`` seconds gets the next pop. Warm-first (delay scheduling): a
worker tells the pop which of its models are loaded; for the others it takes a job only when the oldest queued job
has waited ``cold_delay`` seconds, or when no live worker claims the model warm; and it runs jobs of at most as
many models as its host holds (``plan_pop``, ``Capacity``). See docs/scheduling.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import keys

PRIORITIES = keys.PRIORITIES
STARTS_KEPT = 50  # job start times kept per model for the throughput estimate
ETA_WINDOW = 900.0  # starts older than this (seconds) say nothing about the current throughput


def start_rate(starts: Sequence[float], now: float) -> float | None:
    """Jobs started per second for a model, from its latest start times; None when there is too little data."""
    recent = [t for t in starts if now - t <= ETA_WINDOW]
    if len(recent) < 2:
        return None
    span = max(recent) - min(recent)
    if span <= 0:
        return None
    return (len(recent) - 1) / span


def estimated_start(position: int, starts: Sequence[float], now: float | None = None) -> str | None:
    """When a queued job should start (RFC 3339), from its position and the model's recent start rate."""
    now = time.time() if now is None else now
    rate = start_rate(starts, now)
    if rate is None:
        return None
    seconds = (position + 1) / rate
    if not math.isfinite(seconds) or seconds > 365 * 86400:
        return None
    return datetime.fromtimestamp(now + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode_position(reply: Any) -> tuple[int, str | None] | None:
    """POSITION's reply → (position estimate, estimated start) or None when the job is not queued."""
    if not reply:
        return None
    starts = [float(x) for x in reply[2:]]
    return int(reply[0]), estimated_start(int(reply[0]), starts)


def warm_flags(models: Sequence[str], warm: set[str], cold: str = "0") -> str:
    """One character per model queue the pop will try: '1' when this worker has the model loaded, else ``cold``."""
    return "".join("1" if m in warm else cold for m in models)


def _rotate(group: list[str], rotation: int) -> list[str]:
    if not group:
        return group
    k = rotation % len(group)
    return group[k:] + group[:k]


def pop_order(models: Sequence[str], warm: set[str], rotation: int) -> list[str]:
    """Warm models first, then cold ones; each group rotated so no queue is always tried first."""
    return _rotate([m for m in models if m in warm], rotation) + _rotate(
        [m for m in models if m not in warm], rotation
    )


@dataclass(frozen=True)
class Switch:
    """A pending model switch: stop taking ``victim`` ('': none) so it drains, then take ``target``."""

    target: str
    victim: str


@dataclass(frozen=True)
class SwitchSignal:
    """POP's answer when a model waits with no worker claiming it: per warm model, (queued, other live claims)."""

    model: str
    held: dict[str, tuple[int, int]]


def decode_switch(reply: Any) -> SwitchSignal | None:
    """POP's ``{'switch', model, name, queued, claims, ...}`` reply, or None for any other reply."""
    if not isinstance(reply, list) or not reply or reply[0] not in (b"switch", "switch"):
        return None

    def text(x: Any) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)

    rest = reply[2:]
    held = {text(rest[i]): (int(rest[i + 1]), int(rest[i + 2])) for i in range(0, len(rest) - 2, 3)}
    return SwitchSignal(text(reply[1]), held)


def choose_victim(signal: SwitchSignal, running: set[str], capacity: int) -> str:
    """Which running model to give up: one another worker also has warm, else the one with the fewest queued;
    none ('') when jobs have ended since the pop and there is room already."""
    if len(running) < capacity or not running:
        return ""

    def cost(m: str) -> tuple[bool, int, str]:
        queued, others = signal.held.get(m, (0, 0))
        return others == 0, queued, m

    return min([m for m in running if m in signal.held] or running, key=cost)


def keep_running(running: Mapping[str, int], loaded: set[str], capacity: int) -> set[str]:
    """Over capacity (the capacity was learned, or jobs came back from a switch), the running models to go on
    taking: loaded ones first, then those with the most jobs; the others drain."""
    if capacity <= 0 or len(running) <= capacity:
        return set(running)
    ranked = sorted(running, key=lambda m: (m not in loaded, -running[m], m))
    return set(ranked[:capacity])


def plan_pop(
    models: Sequence[str],
    warm: set[str],
    running: set[str],
    capacity: int,
    switch: Switch | None,
    rotation: int,
) -> tuple[list[str], str]:
    """The queues a pop tries and their flags (common/lua/pop.lua): ``warm`` models first, ``running`` the models of
    the worker's jobs in flight (at most ``capacity``: see ``keep_running``), ``capacity`` the models its host can
    hold at once (0: unknown, no limit).

    Below capacity (or when it is unknown): warm models '1', the others 'c' (cold: after the cold delay, when no
    warm queue has a job; but a model no worker serves whose oldest job has waited the switch delay goes before
    the warm ones, or a deep warm queue would starve it; below capacity loading it evicts nothing, and with the
    capacity unknown an eviction it causes teaches the capacity). With fewer models running than the host holds
    but as many loaded ('warm'), the others are 'e': as 'c', but after the switch delay rather than the cold
    delay, since loading one evicts a loaded model (a bursty mix wants it back: the host would thrash). At
    capacity only the running models may be taken (another would evict one of them: with Ollama, a load waits
    for a busy model to go idle and holds up the requests behind it), and the others are probed ('s') for a model
    nobody serves. A pending switch leaves
    its victim out (so it drains) and reserves its target ('r') until there is room, then takes the target
    first ('t')."""
    full = capacity > 0 and len(running) >= capacity
    if switch is not None:
        others = [m for m in models if m not in (switch.target, switch.victim)]
        if full:
            held = _rotate([m for m in others if m in running], rotation)
            return [*held, switch.target], "1" * len(held) + "r"
        order = [switch.target, *pop_order(others, warm, rotation)]
        return order, "t" + warm_flags(order[1:], warm, "c")
    if not full:
        order = pop_order(models, warm, rotation)
        # loaded models fill the host (some idle): a cold model evicts one of them, which may be wanted again soon
        return order, warm_flags(order, warm, "e" if 0 < capacity <= len(warm) else "c")
    held = _rotate([m for m in models if m in running], rotation)
    probes = _rotate([m for m in models if m not in running], rotation)
    return held + probes, "1" * len(held) + "s" * len(probes)


class Capacity:
    """How many models this host holds at once: ``CORRAL_MAX_LOADED_MODELS``, or learned from ``/api/ps``.

    Unknown at first (no limit). Once a model leaves ``/api/ps`` while another one arrives, or while a model of
    the worker's running jobs is not loaded (so it is waiting for memory), the host has evicted a model to load
    another: its capacity is then the most models ever seen loaded together (it can still grow later)."""

    def __init__(self, configured: int = 0) -> None:
        self.configured = configured
        self.most_seen = 0
        self.evicted = False
        self._previous: set[str] = set()

    @property
    def limit(self) -> int:
        if self.configured:
            return self.configured
        return max(1, self.most_seen) if self.evicted else 0

    def observe(self, loaded: set[str], running: set[str]) -> bool:
        """One ``/api/ps`` answer; True when it taught the worker its capacity for the first time."""
        self.most_seen = max(self.most_seen, len(loaded))
        gone = self._previous - loaded
        arrived = loaded - self._previous
        self._previous = set(loaded)
        if self.evicted or not gone or not (arrived or running - loaded):
            return False
        self.evicted = True
        return not self.configured
