"""Scheduling benchmark: the same simulated fleet and requests in front of every dispatcher, each run to completion.

``python -m bench.scheduling [--workload affinity|spread|all] [--runs 3] [--n 2000] [--only NAME …] [--lock F]``; the
dispatchers are in ``bench/dispatchers.py``, the workloads in ``bench/workloads.py``. Each dispatcher runs
``--runs`` times, interleaved (round k runs every dispatcher once, in an order rotated by k), each time against
fresh simulators with nothing loaded; the table shows medians with min-max. The simulators count the model loads
(``GET /sim/stats``). With ollama-herd in the run the benchmark re-runs itself in a network namespace of its own
(its router advertises itself over mDNS), which needs root or unprivileged user namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .dispatchers import ABLATIONS, DISPATCHERS, Target, peer_missing, rerun_in_netns
from .harness import ROOT, Rig, pct
from .workloads import SPEEDS, TIME_SCALE, WORKLOADS, Request, Workload, at_time_scale

CLIENT_CONNECTIONS = 256  # requests the load generator keeps open at once, like an application's pool
SAFETY_BOUND = 1800.0  # seconds: far above any run; a dispatcher that hits it has failed, not finished
ORDER = list(DISPATCHERS)
NAMED = {**DISPATCHERS, **ABLATIONS}  # the ablation rows run only when named (--only)


@dataclass
class Outcome:
    ttft: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    errors: int = 0
    wrong_model: int = 0  # answered, but by another model than asked (counted as failed)
    samples: list[str] = field(default_factory=list)
    last_done: float = 0.0

    def failed(self, why: str) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(why[:200])


def first_token(api: str, line: str) -> tuple[bool, str]:
    """(does this line carry output, the model that produced it) for a line of either streaming API."""
    if api == "openai":
        if not line.startswith("data: ") or line == "data: [DONE]":
            return False, ""
        chunk = json.loads(line[6:])
        if chunk.get("error"):
            raise RuntimeError(line)
        delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
        return bool(delta.get("content")), str(chunk.get("model", ""))
    chunk = json.loads(line)
    if chunk.get("error"):
        raise RuntimeError(line)
    return bool(chunk.get("response")) or bool(chunk.get("done")), str(chunk.get("model", ""))


def same_model(asked: str, answered: str) -> bool:
    """LiteLLM names the model as its provider does (``ollama/<m>``); Ollama adds ``:latest`` to bare names."""

    def bare(name: str) -> str:
        return name.rsplit("/", 1)[-1].removesuffix(":latest")

    return not answered or bare(asked) == bare(answered)


async def run_load(target: Target, requests: list[Request]) -> Outcome:
    """Send every request at its offset, streaming; time its first output and its end from when it was due."""
    outcome = Outcome()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=CLIENT_CONNECTIONS)
    gate = asyncio.Semaphore(CLIENT_CONNECTIONS)
    path = "/v1/chat/completions" if target.api == "openai" else "/api/generate"
    async with httpx.AsyncClient(base_url=target.url, timeout=SAFETY_BOUND, limits=limits,
                                 headers=target.headers) as http:  # fmt: skip
        start = time.perf_counter()

        async def one(req: Request) -> None:
            sent = start + req.at  # waiting for one of the client's connections counts
            await asyncio.sleep(max(0.0, sent - time.perf_counter()))
            if target.api == "openai":
                body: dict[str, Any] = {"model": req.model, "stream": True,
                                        "messages": [{"role": "user", "content": req.prompt}]}  # fmt: skip
            else:
                body = {"model": req.model, "prompt": req.prompt, "stream": True}
            first, wrong = 0.0, ""
            try:
                async with gate, http.stream("POST", path, json=body) as answer:
                    if answer.status_code != 200:
                        raise RuntimeError(f"HTTP {answer.status_code}: {(await answer.aread())[:150]!r}")
                    async for line in answer.aiter_lines():
                        if not line:
                            continue
                        output, model = first_token(target.api, line)
                        wrong = wrong or ("" if same_model(req.model, model) else model)
                        if output and not first:
                            first = time.perf_counter()
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                outcome.failed(f"{type(exc).__name__}: {exc}")
                return
            if wrong:
                outcome.wrong_model += 1
                outcome.failed(f"asked {req.model}, answered by {wrong}")
                return
            end = time.perf_counter()
            outcome.ttft.append((first or end) - sent)
            outcome.done.append(end - sent)
            outcome.last_done = max(outcome.last_done, end - start)

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        _, pending = await asyncio.wait(tasks, timeout=SAFETY_BOUND)
        for task in pending:
            task.cancel()
        if pending:
            raise RuntimeError(
                f"{len(pending)} requests still open after the {SAFETY_BOUND:.0f} s safety bound"
            )
    return outcome


def loads(sims: list[str]) -> int:
    return sum(int(httpx.get(s + "/sim/stats", timeout=10).json()["loads"]) for s in sims)


def scenario(name: str, work: Workload, requests: list[Request]) -> dict[str, Any]:
    """One run of one dispatcher against fresh simulators: its numbers."""
    rig = Rig()
    try:
        sims = [rig.simulator(",".join(work.models), speed=speed, specs=json.dumps(work.specs()),
                              **work.sim_options) for speed in SPEEDS]  # fmt: skip
        target = NAMED[name][1](rig, sims, work)
        outcome = asyncio.run(run_load(target, requests))
        row = summarise(outcome, loads(sims), requests[0].at)
    except BaseException:
        rig.close()
        print(f"  {name} failed; its processes' logs are in {rig.tmp}", file=sys.stderr)
        raise
    rig.close()
    shutil.rmtree(rig.tmp, ignore_errors=True)
    return row


def summarise(outcome: Outcome, model_loads: int, first_due: float) -> dict[str, Any]:
    n = len(outcome.done)
    makespan = outcome.last_done - first_due if n else float("nan")
    return {
        "n": n,
        "errors": outcome.errors,
        "wrong_model": outcome.wrong_model,
        "ttft_p50": pct(outcome.ttft, 0.5) if n else float("nan"),
        "ttft_p95": pct(outcome.ttft, 0.95) if n else float("nan"),
        "done_p95": pct(outcome.done, 0.95) if n else float("nan"),
        "makespan": makespan,
        "throughput": n / makespan if n else 0.0,
        "loads": model_loads,
        "samples": outcome.samples,
    }


@contextlib.contextmanager
def run_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` ('' = none) for one run, so other benchmarks run between runs."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_all(
    work: Workload, n: int, runs: int, names: list[str], lock: str = ""
) -> dict[str, list[dict[str, Any]]]:
    """Every dispatcher ``runs`` times, interleaved, the order rotated each round; each run under ``lock``."""
    requests = work.requests(n)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for k in range(runs):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            try:
                with run_lock(lock):
                    row = scenario(name, work, requests)
            except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
                print(f"  {work.name} run {k + 1}/{runs} {name}: did not run ({exc})", flush=True)
                continue
            results[name].append(row)
            print(f"  {work.name} run {k + 1}/{runs} {name}: {row['n']} done, {row['errors']} failed, "
                  f"{row['loads']} loads, TTFT p50 {row['ttft_p50']:.2f} s, p95 {row['done_p95']:.2f} s, "
                  f"makespan {row['makespan']:.1f} s {row['samples'][:1]}", flush=True)  # fmt: skip
    return results


def spread(values: list[float], fmt: str) -> str:
    """The median, and min-max when there is more than one run."""
    mid = fmt.format(statistics.median(values))
    return mid if len(values) < 2 else f"{mid} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Markdown: one row per dispatcher, medians over the runs (min-max), the median ratio to round-robin."""
    base = {k: statistics.median(r[k] for r in results["round-robin"]) for k in ("done_p95", "loads")} \
        if "round-robin" in results else {}  # fmt: skip
    lines = ["| dispatcher | done / failed | TTFT p50 | TTFT p95 | completion p95 | makespan | model loads | "
             "jobs/s | p95, loads vs round-robin |", "|" + "---|" * 9]  # fmt: skip
    for name, rows in results.items():
        if not rows:
            lines.append(f"| {NAMED[name][0]} | did not run | | | | | | | |")
            continue
        col = {k: [float(r[k]) for r in rows] for k in rows[0] if k != "samples"}
        ratio = ""
        if base:
            ratio = (f"{statistics.median(col['done_p95']) / base['done_p95']:.2f}x, "
                     f"{statistics.median(col['loads']) / max(base['loads'], 1):.2f}x")  # fmt: skip
        lines.append(
            f"| {NAMED[name][0]} | {statistics.median(col['n']):.0f} / {statistics.median(col['errors']):.0f}"
            f" | {spread(col['ttft_p50'], '{:.2f}')} s | {spread(col['ttft_p95'], '{:.2f}')} s"
            f" | {spread(col['done_p95'], '{:.2f}')} s | {spread(col['makespan'], '{:.1f}')} s"
            f" | {spread(col['loads'], '{:.0f}')} | {spread(col['throughput'], '{:.1f}')} | {ratio} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduling")
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--n", type=int, default=2000, help="requests per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per dispatcher, interleaved")
    parser.add_argument(
        "--only", nargs="*", choices=list(NAMED), help="these dispatchers (default: every one installed)"
    )
    parser.add_argument("--lock", default="", help="a file to flock for each run (not for the whole table)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=TIME_SCALE,
        help=f"every simulated delay times this ({TIME_SCALE:g})",
    )
    args = parser.parse_args(argv)
    names = args.only or ORDER
    left_out = {name: why for name in names if (why := peer_missing(name))}
    names = [name for name in names if name not in left_out]
    if "herd" in names:
        rerun_in_netns("bench.scheduling", sys.argv[1:] if argv is None else argv)
    report = [
        f"Scheduling benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {args.runs} interleaved runs per "
        f"dispatcher, medians (min-max); {os.cpu_count()} cores; simulated delays x {args.time_scale:g}"
    ]
    everything: dict[str, Any] = {}
    for work in WORKLOADS.values() if args.workload == "all" else [WORKLOADS[args.workload]]:
        work = at_time_scale(work, args.time_scale)
        results = run_all(work, args.n, args.runs, names, args.lock)
        everything[work.name] = results
        fleet = f"3 hosts of speed {'/'.join(map(str, SPEEDS))}, at most {CLIENT_CONNECTIONS} open at once"
        report += [
            "",
            f"**{work.name}**: {args.n} streamed requests, {work.about}; {fleet}",
            "",
            *table(results),
        ]
    for name, why in left_out.items():
        report.append(f"\n{DISPATCHERS[name][0]} left out: {why}")
    out = ROOT / ".corral" / "bench" / f"scheduling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(everything, indent=1))
    print("\n".join(report) + f"\n\nEvery run's numbers: {out}")


if __name__ == "__main__":
    main()
