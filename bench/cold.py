"""How much slower the first token's code runs when it has not run for a while: ``python -m bench.cold [--runs N]``.

Three pieces of a submit's path (the key check of an API without keys, the validation of a small chat request, the
job built from it) each run right after the same piece (back to back), after a sleep, after spinning on the CPU
for as long (the process never leaves the core), and after walking a buffer larger or smaller than the machine's
last-level cache. The table gives each piece's median time in µs. docs/benchmarks.md ("Cold code") reads it:
where the times after 20 ms are many times those back to back whether the process slept or spun, the machine's
other work evicts what the path touched, and a first token costs what its path has to fetch again from memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from starlette.datastructures import Headers

from corral.api.apikeys import credential, required_scope
from corral.common.jobs import Limits, prepare_job
from corral.common.schemas import JobRequest
from corral.common.settings import Settings

SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/api/chat",
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"accept", b"*/*")],
}
BODY = {"model": "llama3", "messages": [{"role": "user", "content": "why is the sky blue?"}], "kind": "chat"}
LIMITS = Limits.from_settings(Settings())
REQUEST = JobRequest.model_validate(BODY)


def key_check() -> None:
    required_scope("POST", "/api/chat")
    credential(Headers(scope=SCOPE))


def validation() -> None:
    JobRequest.model_validate(BODY)


def job_built() -> None:
    prepare_job(REQUEST, LIMITS, reply_to="corral:api:bench", link_first=True)


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def walker(megabytes: int) -> Callable[[], None]:
    buffer = bytearray(megabytes << 20)

    def walk() -> None:
        for i in range(0, len(buffer), 64):  # (one byte per cache line)
            buffer[i] ^= 1

    return walk


BEFORE: list[tuple[str, Callable[[], None]]] = [
    ("back to back", lambda: None),
    ("after 1 ms asleep", lambda: time.sleep(0.001)),
    ("after 20 ms asleep", lambda: time.sleep(0.02)),
    ("after 20 ms spinning", lambda: spin(0.02)),
    ("after walking 4 MB", walker(4)),
    ("after walking 64 MB", walker(64)),
]
PIECES = [("key check", key_check), ("validation", validation), ("job built", job_built)]


def median_us(piece: Callable[[], None], before: Callable[[], None], runs: int) -> float:
    piece()  # (its first run ever: imports, caches)
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter_ns()
        piece()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def table(runs: int) -> str:
    rows = [
        "| before the run | " + " | ".join(name for name, _ in PIECES) + " |",
        "|---" * (len(PIECES) + 1) + "|",
    ]
    for label, before in BEFORE:
        cells = [f"{median_us(piece, before, runs):.1f}" for _, piece in PIECES]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="runs of each piece in each case")
    args = parser.parse_args()
    print(f"median µs of {args.runs} runs (python -m bench.cold)\n")
    print(table(max(1, args.runs)))


if __name__ == "__main__":
    main()
