"""Drop-in numbers: time to first token and per-chunk overhead of /api/generate and /v1/chat/completions through
Corral, against the simulator's /api/generate and /api/chat called directly, in the same run."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from .harness import Rig, pct

TOKENS = 40
PROMPT = " ".join(f"w{i}" for i in range(TOKENS - 2))  # the simulator answers "<model> heard: <prompt>"


def timed_stream(
    http: httpx.Client, url: str, body: dict[str, Any], is_token: Callable[[str], bool]
) -> tuple[float, float, int]:
    """(time to first token, time to last token, tokens) of one streamed request."""
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with http.stream("POST", url, json=body) as response:
        for line in response.iter_lines():
            if line and is_token(line):
                last = time.perf_counter() - start
                first = first or last
                tokens += 1
    return first, last, tokens


def ndjson_token(line: str) -> bool:
    obj = json.loads(line)
    return not obj.get("done") and bool(obj.get("response") or (obj.get("message") or {}).get("content"))


def sse_token(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def bench_dropin(n: int) -> dict[str, Any]:
    rig = Rig()
    try:
        sim = rig.simulator(ttft=0.02, tps=200, load_time=0, parallel=4)
        rig.worker(sim, "bench-w", worker_slots=4)
        api, _ = rig.api()
        gen = {"model": "llama3", "prompt": PROMPT, "stream": True}
        chat = {"model": "llama3", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        pairs = {
            "generate": (
                (sim + "/api/generate", gen, ndjson_token),
                (api + "/api/generate", gen, ndjson_token),
            ),
            "openai": (
                (sim + "/api/chat", chat, ndjson_token),
                (api + "/v1/chat/completions", chat, sse_token),
            ),
        }
        out: dict[str, Any] = {}
        with httpx.Client(timeout=30) as http:
            for name, (direct, ours) in pairs.items():
                for _ in range(5):
                    timed_stream(http, *direct), timed_stream(http, *ours)
                rows = [(timed_stream(http, *direct), timed_stream(http, *ours)) for _ in range(n)]
                added = [o[0] - d[0] for d, o in rows]
                per_chunk = [((o[1] - o[0]) - (d[1] - d[0])) / max(o[2] - 1, 1) for d, o in rows]
                assert all(o[2] == d[2] == TOKENS for d, o in rows), "token counts differ"
                out[name] = {
                    "added_p50": statistics.median(added),
                    "added_p95": pct(added, 0.95),
                    "chunk_p50": statistics.median(per_chunk),
                    "chunk_p95": pct(per_chunk, 0.95),
                }
        return out
    finally:
        rig.close()
