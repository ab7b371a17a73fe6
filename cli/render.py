"""Readable tables for people; ``--json`` gives the API's JSON for scripts."""

from __future__ import annotations

import json
from typing import Any


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def render(kind: str, body: dict[str, Any]) -> str:
    """Readable tables for people; ``--json`` gives the API's JSON for scripts."""
    if kind == "workers":
        rows = [
            [w["id"], "alive" if w["alive"] else "DEAD", w.get("state") or "-",
             "ok" if w.get("healthy") else "unhealthy", f"{w.get('slots_busy', 0)}/{w.get('slots_total', 0)}",
             f"{w.get('age', 0):.1f}s", w.get("backend") or "-", _num(w.get("weight")),
             _num(w.get("max_loaded_models") or None), ",".join(w.get("models") or []) or "-"]
            for w in body["workers"]
        ]  # fmt: skip
        header = [
            "WORKER",
            "LIVE",
            "STATE",
            "HEALTH",
            "SLOTS",
            "HEARTBEAT",
            "BACKEND",
            "WEIGHT",
            "MAX_LOADED",
        ]
        return table(rows, [*header, "MODELS"])
    if kind == "jobs":
        return jobs_table(body)
    if kind == "queues":
        rows = [[q["model"], str(q["queued"]), str(q.get("running", 0))] for q in body["queues"]]
        return table(rows, ["MODEL", "QUEUED", "RUNNING"])
    return json.dumps(body, indent=2)


def _num(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def jobs_table(body: dict[str, Any]) -> str:
    rows = [
        [j["id"], j["status"], j["model"], j.get("worker") or "-", _num(j.get("queued_s"), "s"),
         _num(j.get("ttft_s"), "s"), _num(j.get("tokens_per_s")), str(j["attempt"]), (j.get("error") or "")[:60]]
        for j in body["jobs"]
    ]  # fmt: skip
    header = ["JOB", "STATUS", "MODEL", "WORKER", "QUEUED", "TTFT", "TOK/S", "ATTEMPTS", "ERROR"]
    more = f"\nmore: --cursor {body['next_cursor']}" if body.get("next_cursor") else ""
    return table(rows, header) + more
