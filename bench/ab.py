"""Added time to first token of two source trees, measured side by side: ``python -m bench.ab TREE_A TREE_B [N]``.

Each tree gets its own full stack (Redis, simulator, worker, API, started from that tree's code); one client
alternates between them request by request, so both see the same moments of a VM whose speed drifts by tens of
percent within an hour. Separate runs of ``bench.core.bench_ttft`` differ by more than most changes are worth.
Compare two commits with ``git worktree add /tmp/before <commit>`` and a ``make -C /tmp/before .venv/.installed``
(each tree runs from its own ``.venv``), then ``python -m bench.ab /tmp/before .``
Run it twice with the trees swapped, on the machine as it is (no real-time priority, no pinning).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

import httpx

from . import harness
from .core import ttft_corral, ttft_corral_stream, ttft_direct, ttft_stack
from .harness import pct


def stack(tree: Path, transport: str = "tcp") -> tuple[harness.Rig, str, str]:
    """A Redis plus the processes of ``tree`` (the harness starts its ``corral`` command in its root),
    connected to Redis over ``transport`` (``unix`` or ``tcp``)."""
    harness.ROOT = tree
    rig = harness.Rig(transport=transport)
    try:
        sim, api = ttft_stack(rig)
    except BaseException:
        rig.close()  # a stack that did not come up leaves no process behind
        raise
    return rig, sim, api


async def measure(stacks: list[tuple[str, str]], n: int) -> list[dict[str, list[float]]]:
    added: list[dict[str, list[float]]] = [{"stream": [], "two_step": []} for _ in stacks]
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(10):  # warm up every path of every stack
            for sim, api in stacks:
                await ttft_direct(http, sim, f"w{i}")
                await ttft_corral_stream(http, api, f"w{i}")
                await ttft_corral(http, api, f"w{i}")
        for i in range(n):
            order = list(enumerate(stacks))
            for k, (sim, api) in order if i % 2 == 0 else order[::-1]:
                direct = await ttft_direct(http, sim, f"p{i}")
                added[k]["stream"].append(await ttft_corral_stream(http, api, f"p{i}") - direct)
                direct = await ttft_direct(http, sim, f"q{i}")
                added[k]["two_step"].append(await ttft_corral(http, api, f"q{i}") - direct)
    return added


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    # TREE, or TREE#unix: that stack's API and worker reach Redis over a unix socket rather than loopback TCP
    specs = [a.partition("#") for a in argv[:2]]
    trees = [Path(a).resolve() for a, _, _ in specs]
    transports = [t or "tcp" for _, _, t in specs]
    n = int(argv[2]) if len(argv) > 2 else 200
    rigs = []
    try:
        stacks = []
        for tree, transport in zip(trees, transports, strict=True):
            rig, sim, api = stack(tree, transport)
            rigs.append(rig)
            stacks.append((sim, api))
        added = asyncio.run(measure(stacks, n))
    finally:
        for rig in rigs:
            rig.close()
    base = statistics.median(added[0]["stream"])
    print(f"added TTFT, {n} alternating pairs per tree\n")
    print("| tree | stream p50 | stream p95 | POST then GET p50 | stream p50 vs first |")
    print("|---|---|---|---|---|")
    for tree, result in zip(argv[:2], added, strict=True):
        stream, two_step = result["stream"], result["two_step"]
        p50 = statistics.median(stream)
        print(f"| {tree} | {p50 * 1e3:.2f} ms | {pct(stream, 0.95) * 1e3:.2f} ms | "
              f"{statistics.median(two_step) * 1e3:.2f} ms | {p50 / base:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
