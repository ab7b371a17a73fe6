"""Added time to first token on a real engine: llama.cpp's OpenAI-compatible server (llama-cpp-python, the `engine`
extra) serving the tests' tiny model, called directly and through two of Corral's streaming routes (submit and
stream, ``POST /jobs``; the drop-in ``/v1/completions``), in rounds of three requests whose order rotates, so all
see the same moments of the machine.
``python -m bench.engine [N]`` prints the row; ``make bench`` adds it to its table."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx

from tests.engine.server import tiny_engine

from .harness import Rig, summary

BODY = {"model": "tiny", "max_tokens": 8, "temperature": 0, "seed": 7, "stream": True}
JOB = {"model": "tiny", "options": {"num_predict": 8, "temperature": 0, "seed": 7}, "stream": True}


def ttft(http: httpx.Client, url: str, prompt: str) -> float:
    """Seconds from the request to the first SSE chunk with text (the engine's or Corral's ``/v1/completions``)."""
    start = time.perf_counter()
    first = 0.0
    with http.stream("POST", url, json={**BODY, "prompt": prompt}) as response:
        for line in response.iter_lines():
            if not first and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or []
                if choices and choices[0].get("text"):
                    first = time.perf_counter() - start
    return first


def ttft_job(http: httpx.Client, url: str, prompt: str) -> float:
    """Seconds from a submit-and-stream ``POST /jobs`` to its first ``chunk`` event."""
    start = time.perf_counter()
    first = 0.0
    headers = {"Accept": "application/x-ndjson"}
    with http.stream("POST", url, json={**JOB, "prompt": prompt}, headers=headers) as response:
        for line in response.iter_lines():
            if line and not first and json.loads(line)["type"] == "chunk":
                first = time.perf_counter() - start
    return first


def bench_engine(n: int) -> dict[str, Any]:
    """``n`` rounds of three requests (the engine directly, Corral's ``POST /jobs`` stream, Corral's drop-in
    ``/v1/completions``), their order rotating; the added TTFT of each Corral route is per round."""
    rig = Rig()
    engine = None
    try:
        engine = tiny_engine(rig.tmp, "tiny").wait_ready()
        rig.worker("http://127.0.0.1:1", "bench-engine", backend_url=engine.url)
        api, _ = rig.api()
        paths = {"direct": (ttft, engine.url + "/completions"), "jobs": (ttft_job, api + "/jobs"),
                 "dropin": (ttft, api + "/v1/completions")}  # fmt: skip
        names = list(paths)
        seen: dict[str, list[float]] = {name: [] for name in names}
        with httpx.Client(timeout=30) as http:
            for i in range(5):  # warm up every path
                for fn, url in paths.values():
                    fn(http, url, f"warm {i}")
            for i in range(n):
                for name in names[i % 3 :] + names[: i % 3]:
                    fn, url = paths[name]
                    seen[name].append(fn(http, url, f"p {i}"))
        direct = seen["direct"]
        out = {name: summary(values) for name, values in seen.items()}
        for name in ("jobs", "dropin"):
            out["added_" + name] = summary([o - d for d, o in zip(direct, seen[name], strict=True)])
        return out
    finally:
        if engine is not None:
            engine.stop()
        rig.close()


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 100
    result = bench_engine(n)
    print(f"llama.cpp server (llama-cpp-python), tiny model, 8 tokens, {n} rounds of 3 interleaved requests")
    print("| path | TTFT p50 | TTFT p95 | added p50 | added p95 | 95% CI of the added median |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, label in (("direct", "engine directly, /v1/completions"), ("jobs", "Corral, POST /jobs stream"),
                        ("dropin", "Corral, drop-in /v1/completions")):  # fmt: skip
        row, added = result[name], result.get("added_" + name)
        extra = (f"{added['p50'] * 1000:.2f} ms | {added['p95'] * 1000:.2f} ms | "
                 f"{added['lo'] * 1000:.2f}-{added['hi'] * 1000:.2f} ms") if added else "| |"  # fmt: skip
        print(f"| {label} | {row['p50'] * 1000:.2f} ms | {row['p95'] * 1000:.2f} ms | {extra} |")


if __name__ == "__main__":
    main(sys.argv[1:])
