"""Added time to first token on a real engine: llama.cpp's OpenAI-compatible server (llama-cpp-python, the `engine`
extra) serving the tests' tiny model, called directly and through Corral's drop-in ``/v1/completions``, request by
request in pairs (the order alternating), so both see the same moments of the machine.
``python -m bench.engine [N]`` prints the row; ``make bench`` adds it to its table."""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import httpx

from tests.engine.server import tiny_engine

from .harness import Rig, summary

BODY = {"model": "tiny", "max_tokens": 8, "temperature": 0, "seed": 7, "stream": True}


def ttft(http: httpx.Client, url: str, prompt: str) -> float:
    """Seconds from the request to the first chunk with text."""
    start = time.perf_counter()
    first = 0.0
    with http.stream("POST", url, json={**BODY, "prompt": prompt}) as response:
        for line in response.iter_lines():
            if not first and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or []
                if choices and choices[0].get("text"):
                    first = time.perf_counter() - start
    return first


def bench_engine(n: int) -> dict[str, Any]:
    rig = Rig()
    engine = None
    try:
        engine = tiny_engine(rig.tmp, "tiny").wait_ready()
        rig.worker("http://127.0.0.1:1", "bench-engine", backend_url=engine.url)
        api, _ = rig.api()
        direct, ours = engine.url + "/completions", api + "/v1/completions"
        with httpx.Client(timeout=30) as http:
            for i in range(5):  # warm up both paths
                ttft(http, direct, f"warm {i}"), ttft(http, ours, f"warm {i}")
            pairs = []
            for i in range(n):
                if i % 2:
                    d, o = ttft(http, direct, f"p {i}"), ttft(http, ours, f"p {i}")
                else:
                    o, d = ttft(http, ours, f"p {i}"), ttft(http, direct, f"p {i}")
                pairs.append((d, o))
        return {
            "direct": summary([d for d, _ in pairs]),
            "corral": summary([o for _, o in pairs]),
            "added": summary([o - d for d, o in pairs]),
        }
    finally:
        if engine is not None:
            engine.stop()
        rig.close()


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 100
    result = bench_engine(n)
    ms = {k: f"{v['p50'] * 1000:.2f} ms (p95 {v['p95'] * 1000:.2f})" for k, v in result.items()}
    print(f"llama.cpp server, tiny model, {n} pairs: TTFT direct {ms['direct']}, through Corral {ms['corral']}, "
          f"added {ms['added']}, 95% CI of the added median "
          f"{result['added']['lo'] * 1000:.2f}-{result['added']['hi'] * 1000:.2f} ms; median ratio "
          f"{statistics.median([result['corral']['p50'] / result['direct']['p50']]):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
