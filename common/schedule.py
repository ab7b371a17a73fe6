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

# Lua helpers shared by the job scripts (inserted before each script's body).
SCHED_LUA = f"""
local PRIOS = {{'high', 'normal', 'low'}}
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function subq(m, p, s) return '{keys.SUBQUEUE_PREFIX}' .. m .. '|' .. p .. '|' .. s end
local function activek(m, p) return '{keys.ACTIVE_PREFIX}' .. m .. '|' .. p end
local function weight(s)
  local w = tonumber(redis.call('HGET', '{keys.WEIGHTS}', s) or '1') or 1
  if w <= 0 then return 1 end
  return w
end
-- put a queued id into the fair-share index (at the front for a retry)
-- (returns the length of the submitter's sub-queue)
local function index_push(m, p, s, id, front)
  local q = subq(m, p, s)
  local n
  if front then n = redis.call('LPUSH', q, id) else n = redis.call('RPUSH', q, id) end
  local vt = redis.call('HGET', '{keys.VTIME}', m .. '|' .. p) or '0'
  if redis.call('EXISTS', activek(m, p)) == 0 then  -- the level was empty: its wait for aging starts now
    redis.call('HSET', '{keys.SERVED}', m .. '|' .. p, string.format('%.3f', clock()))
  end
  redis.call('ZADD', activek(m, p), 'NX', vt, s)
  return n
end
-- take an id out of the index (cancel, expiry)
local function index_remove(m, p, s, id)
  if not (m and p and s) then return end
  local q = subq(m, p, s)
  redis.call('LREM', q, 1, id)
  if redis.call('LLEN', q) == 0 then redis.call('ZREM', activek(m, p), s) end
end
-- the priority level to serve: the highest with jobs, unless a lower one with jobs has not been served for
-- ``aging`` seconds (then the longest-waiting such level: one pop per aging interval, so none starves)
local function levels(m, now, aging)
  if aging <= 0 then return PRIOS end
  local starved, oldest = nil, nil
  for i = 2, #PRIOS do
    local p = PRIOS[i]
    if redis.call('EXISTS', activek(m, p)) == 1 then
      local t = tonumber(redis.call('HGET', '{keys.SERVED}', m .. '|' .. p) or '0') or 0
      if now - t >= aging and (oldest == nil or t < oldest) then starved, oldest = p, t end
    end
  end
  if not starved then return PRIOS end
  local order = {{starved}}
  for _, p in ipairs(PRIOS) do if p ~= starved then order[#order + 1] = p end end
  return order
end
-- the next id of a model: highest priority first (see levels), then the submitter with the lowest virtual start
local function index_pop(m, now, aging)
  for _, p in ipairs(levels(m, now, aging)) do
    local ak = activek(m, p)
    for _ = 1, 100 do
      local head = redis.call('ZRANGE', ak, 0, 0, 'WITHSCORES')
      if #head == 0 then break end
      local s, score = head[1], tonumber(head[2])
      local q = subq(m, p, s)
      local id = redis.call('LPOP', q)
      if redis.call('LLEN', q) == 0 then
        redis.call('ZREM', ak, s)
      else
        redis.call('ZADD', ak, score + 1 / weight(s), s)
      end
      if id then
        redis.call('HSET', '{keys.VTIME}', m .. '|' .. p, score)
        redis.call('HSET', '{keys.SERVED}', m .. '|' .. p, string.format('%.3f', now))
        return id
      end
    end
  end
  return nil
end
-- jobs expected to start before the i-th (from 0) queued job of submitter s in (m, p): every job of a higher
-- priority, the submitter's own before it, and each other submitter's jobs whose virtual start comes first
local function fair_position(m, p, s, i)
  local pos = i
  for _, hp in ipairs(PRIOS) do
    if hp == p then break end
    for _, t in ipairs(redis.call('ZRANGE', activek(m, hp), 0, -1)) do
      pos = pos + redis.call('LLEN', subq(m, hp, t))
    end
  end
  local mine = tonumber(redis.call('ZSCORE', activek(m, p), s) or '0') + i / weight(s)
  local others = redis.call('ZRANGE', activek(m, p), 0, -1, 'WITHSCORES')
  for j = 1, #others, 2 do
    local t, ts = others[j], tonumber(others[j + 1])
    if t ~= s and mine > ts then
      pos = pos + math.min(redis.call('LLEN', subq(m, p, t)), math.ceil((mine - ts) * weight(t)))
    end
  end
  return pos
end
-- seconds the oldest queued job of a model queue has waited (nil: the queue is empty)
local function head_age(qkey, now)
  local head = redis.call('LINDEX', qkey, 0)
  if not head then return nil end
  return now - (tonumber(redis.call('HGET', '{keys.RQ_JOB_PREFIX}' .. head, 'enq_ts') or '0') or 0)
end
-- how many workers claim model m warm now (claims expire)
local function live_claims(m, now) return redis.call('ZCOUNT', '{keys.WARM_PREFIX}' .. m, now, '+inf') end
-- seconds a cold worker must still wait before taking a job of model m (0: take it now, -1: queue empty)
local function cold_wait(m, qkey, now, delay)
  local age = head_age(qkey, now)
  if not age then return -1 end
  if live_claims(m, now) == 0 then return 0 end
  local left = delay - age
  if left <= 0 then return 0 end
  return left
end
"""

# KEYS: none.  ARGV: job id.
# Returns false when the job is not queued, else {position estimate, model, starts...} (starts newest first).
POSITION_SRC = (
    SCHED_LUA
    + f"""
local jk = '{keys.RQ_JOB_PREFIX}' .. ARGV[1]
local st = redis.call('HMGET', jk, 'status', 'model', 'priority', 'submitter', 'origin')
if st[1] ~= 'queued' then return false end
local m, p, s = st[2], st[3], st[4]
local pos = nil
local i = nil
if m and p and s then i = redis.call('LPOS', subq(m, p, s), ARGV[1]) end
if i then
  pos = fair_position(m, p, s, i)
else
  pos = redis.call('LPOS', '{keys.RQ_QUEUE_PREFIX}' .. (st[5] or ''), ARGV[1]) or 0
end
local out = {{pos, m or ''}}
for _, x in ipairs(redis.call('LRANGE', '{keys.STARTS_PREFIX}' .. (m or ''), 0, -1)) do out[#out + 1] = x end
return out
"""
)


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
    """The queues a pop tries and their flags (POP_SRC): ``warm`` models first, ``running`` the models of the
    worker's jobs in flight (at most ``capacity``: see ``keep_running``), ``capacity`` the models its host can
    hold at once (0: unknown, no limit).

    Below capacity (or when it is unknown): warm models '1', the others 'c' (cold: after the cold delay, when no
    warm queue has a job; but a model no worker serves whose oldest job has waited the switch delay goes before
    the warm ones, or a deep warm queue would starve it; below capacity loading it evicts nothing, and with the
    capacity unknown an eviction it causes teaches the capacity). At capacity only the running models may be
    taken (another would evict one of them: with Ollama, a load waits for a busy model to go idle and holds up
    the requests behind it), and the others are probed ('s') for a model nobody serves. A pending switch leaves
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
        return order, warm_flags(order, warm, "c")
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
