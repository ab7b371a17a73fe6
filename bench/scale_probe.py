"""What ``bench.scale`` reads from Redis: the SLOWLOG (every command, ``slowlog-log-slower-than 0``) by script, INFO's
CPU, memory and command counters. Measures that do not depend on how loaded the machine is: the microseconds Redis
spends in a script, commands and Redis CPU per job, bytes per queued job."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import redis

from corral.common import scripts

MEASURED = (
    scripts.ENQUEUE,
    scripts.ENQUEUE_BATCH,
    scripts.POP,
    scripts.EMIT,
    scripts.FINISH,
    scripts.REQUEUE,
)
SCRIPT_NAMES = {s.sha: s.name for s in MEASURED}
SLOWLOG_LEN = 200_000


def setup(r: redis.Redis) -> None:
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", SLOWLOG_LEN)
    r.slowlog_reset()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slowlog_by_name(r: redis.Redis) -> dict[str, list[float]]:
    """The SLOWLOG's entries since the last reset, in microseconds, by script name (EVALSHA) or command; reset."""
    out: dict[str, list[float]] = {}
    raw = r.execute_command("SLOWLOG", "GET", SLOWLOG_LEN)
    r.slowlog_reset()
    for entry in reversed(raw):  # (oldest first)
        micros, args = entry[2], entry[3]
        cmd = args[0].decode().lower() if args else "?"
        if cmd == "evalsha" and len(args) > 1:
            cmd = SCRIPT_NAMES.get(args[1].decode(), "script")
        out.setdefault(cmd, []).append(float(micros))
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values) if values else float("nan"),
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


@dataclass
class Snapshot:
    """INFO counters at one moment."""

    t: float
    cpu: float  # used_cpu_sys + used_cpu_user, seconds
    memory: int  # used_memory, bytes
    commands: int  # total_commands_processed (client commands: a script call is one)
    net_in: int  # total_net_input_bytes
    calls: dict[str, int]  # commandstats: calls by command (the commands scripts run count too)

    @classmethod
    def take(cls, r: redis.Redis) -> Snapshot:
        info: dict[str, Any] = r.info("all")
        calls = {k[len("cmdstat_") :]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
        return cls(
            t=time.monotonic(),
            cpu=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            memory=int(info["used_memory"]),
            commands=int(info["total_commands_processed"]),
            net_in=int(info["total_net_input_bytes"]),
            calls=calls,
        )

    def delta(self, later: Snapshot) -> dict[str, Any]:
        calls = {k: v - self.calls.get(k, 0) for k, v in later.calls.items() if v != self.calls.get(k, 0)}
        return {
            "seconds": later.t - self.t,
            "cpu": later.cpu - self.cpu,
            "memory": later.memory - self.memory,
            "commands": later.commands - self.commands,
            "net_in": later.net_in - self.net_in,
            "inner_calls": sum(calls.values()),
            "calls": calls,
        }
