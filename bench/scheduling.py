"""Scheduling benchmark: one fleet, one workload, four dispatchers (Corral, round-robin, least-busy, LiteLLM).

The fleet: 3 simulated hosts of different speeds (1.0, 0.7, 1.4), each with room for 2 of the 6 models (8 GB
each in 16 GB), 4 parallel slots per loaded model, loads of 10-20 s, 2 s to first token, 2 tokens/s, 6-token
answers (long jobs, few tokens: the dispatchers' CPU stays small next to the simulated GPU time); every delay is
multiplied by ``TIME_SCALE`` so the run takes seconds. The workload: ``n`` streamed ``/api/generate`` requests,
model popularity Zipf(1.1) over the 6 models, arriving in bursts, at most ``CLIENT_CONNECTIONS`` open at once.
Every dispatcher gets fresh simulators (nothing loaded) and the same requests at the same offsets; the simulators
count the model loads (``GET /sim/stats``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from .harness import ROOT, Rig, free_port, pct, wait

TIME_SCALE = 0.05
MODELS = [f"bench-m{i}:latest" for i in range(6)]
SPEEDS = [1.0, 0.7, 1.4]
SIM_OPTIONS: dict[str, Any] = {
    "ttft": 2.0, "tps": 2, "min_tokens": 6, "parallel": 4, "max_loaded": 2, "memory_gb": 16, "size_gb": 8,
    "max_queue": 100_000, "keep_alive": 3600, "time_scale": TIME_SCALE,
}  # fmt: skip
SPECS = {m: {"load_time": 10 + 2 * i} for i, m in enumerate(MODELS)}
CLIENT_CONNECTIONS = 256  # requests the load generator keeps open at once, like an application's pool
DEADLINE = 120.0  # seconds a dispatcher gets; requests open then are cut off (their times are lower bounds)
COLD_DELAY = 0.5  # seconds, real time: about the scaled time of a model load (0.5-1 s here)
SWITCH_DELAY = (
    1.0  # seconds, real time: a job of a model no host has loaded waits this long before a host switches
)


@dataclass
class Request:
    at: float  # seconds after the start
    model: str
    prompt: str


@dataclass
class Outcome:
    ttft: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    errors: int = 0
    unfinished: list[float] = field(default_factory=list)  # due times of the requests cut off at the deadline
    samples: list[str] = field(default_factory=list)
    first_sent: float = 0.0
    last_done: float = 0.0

    def answered(self, sent: float, first: float, start: float) -> None:
        """One request answered: sent when due, first token at ``first``, last one now."""
        end = time.perf_counter()
        self.ttft.append(first - sent)
        self.done.append(end - sent)
        self.last_done = max(self.last_done, end - start)


def workload(n: int, bursts: int = 10, gap: float = 3.0, spread: float = 0.5, seed: int = 7) -> list[Request]:
    """``n`` requests in ``bursts`` bursts ``gap`` s apart, each spread over ``spread`` s; Zipf(1.1) models."""
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** 1.1 for k in range(len(MODELS))]
    out = []
    for i in range(n):
        burst = i * bursts // n
        model = rng.choices(MODELS, weights)[0]
        out.append(Request(burst * gap + rng.uniform(0, spread), model, f"job {i} about {model}"))
    return sorted(out, key=lambda r: r.at)


async def run_http(base: str, requests: list[Request], headers: dict[str, str] | None = None) -> Outcome:
    """Send every request to ``base``/api/generate at its offset, streaming; time the first and last line."""
    outcome = Outcome()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    gate = asyncio.Semaphore(CLIENT_CONNECTIONS)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits, headers=headers) as http:
        start = time.perf_counter()

        async def one(req: Request) -> None:
            sent = (
                start + req.at
            )  # times count from when the request was due, waiting for a connection included
            await asyncio.sleep(max(0.0, sent - time.perf_counter()))
            first = 0.0
            body = {"model": req.model, "prompt": req.prompt, "stream": True}
            try:
                async with gate, http.stream("POST", "/api/generate", json=body) as answer:
                    async for line in answer.aiter_lines():
                        if not line:
                            continue
                        if not first:
                            first = time.perf_counter()
                        if json.loads(line).get("error"):
                            raise RuntimeError(line)
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                outcome.errors += 1
                if len(outcome.samples) < 3:
                    outcome.samples.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            outcome.answered(sent, first, start)

        await bounded(outcome, [(r, one(r)) for r in requests])
    outcome.first_sent = requests[0].at
    return outcome


async def bounded(outcome: Outcome, calls: list[tuple[Request, Any]]) -> None:
    """Run every request; at ``DEADLINE`` cancel those still open and note them as unfinished."""
    tasks = {asyncio.ensure_future(call): req for req, call in calls}
    _done, pending = await asyncio.wait(tasks, timeout=DEADLINE)
    for task in pending:
        task.cancel()
        outcome.unfinished.append(tasks[task].at)
    await asyncio.gather(*pending, return_exceptions=True)


async def run_litellm(sims: list[str], requests: list[Request]) -> Outcome:
    """LiteLLM's Router, in this process: one deployment per host for each model name, its default strategy."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its price list at import
    from litellm import Router  # type: ignore[import-not-found, unused-ignore]

    model_list = [
        {"model_name": m, "litellm_params": {"model": f"ollama/{m}", "api_base": sim}}
        for m in MODELS
        for sim in sims
    ]
    router = Router(model_list=model_list, num_retries=0, timeout=600)
    outcome = Outcome()
    gate = asyncio.Semaphore(CLIENT_CONNECTIONS)
    start = time.perf_counter()

    async def one(req: Request) -> None:
        sent = start + req.at
        await asyncio.sleep(max(0.0, sent - time.perf_counter()))
        first = 0.0
        try:
            async with gate:
                stream = await router.acompletion(
                    model=req.model, messages=[{"role": "user", "content": req.prompt}], stream=True
                )
                async for _chunk in stream:
                    if not first:
                        first = time.perf_counter()
        except Exception:  # LiteLLM raises its own zoo of exceptions; any is a failed request here
            outcome.errors += 1
            return
        outcome.answered(sent, first, start)

    await bounded(outcome, [(r, one(r)) for r in requests])
    outcome.first_sent = requests[0].at
    return outcome


def start_sims(rig: Rig) -> list[str]:
    return [
        rig.simulator(",".join(MODELS), speed=speed, specs=json.dumps(SPECS), **SIM_OPTIONS)
        for speed in SPEEDS
    ]


def loads(sims: list[str]) -> int:
    return sum(int(httpx.get(s + "/sim/stats", timeout=10).json()["loads"]) for s in sims)


def proxy(rig: Rig, sims: list[str], policy: str) -> str:
    port = free_port()
    log = open(rig.tmp / f"proxy-{policy}.log", "wb")  # noqa: SIM115
    child = subprocess.Popen([sys.executable, "-m", "bench.proxy", "--port", str(port), "--policy", policy, *sims],
                             stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    rig.children.append(child)
    url = f"http://127.0.0.1:{port}"
    wait(lambda: httpx.get(url + "/api/tags").status_code == 200)
    return url


def corral(rig: Rig, sims: list[str], learned: bool = False) -> str:
    """The API and one worker per host; each worker told its host holds 2 models (``CORRAL_MAX_LOADED_MODELS``,
    as docs/scheduling.md says to set it), or with ``learned`` left to find out from the first eviction."""
    settings = {"heartbeat_interval": 0.25, "heartbeat_ttl": 3, "model_refresh_interval": 2,
                "cold_delay": COLD_DELAY, "switch_delay": SWITCH_DELAY, "worker_slots": 8, "max_queue": 0,
                "max_loaded_models": 0 if learned else SIM_OPTIONS["max_loaded"]}  # fmt: skip
    for i, sim in enumerate(sims):
        rig.worker(sim, f"sched-w{i}", **settings)
    url, _ = rig.api(**settings)
    return url


def scenario(name: str, requests: list[Request]) -> dict[str, Any]:
    """One dispatcher against fresh simulators: its numbers."""
    rig = Rig()
    try:
        sims = start_sims(rig)
        if name == "litellm":
            outcome = asyncio.run(run_litellm(sims, requests))
        else:
            base = (
                corral(rig, sims, name == "corral-learned")
                if name.startswith("corral")
                else proxy(rig, sims, name)
            )
            outcome = asyncio.run(run_http(base, requests))
        return summarise(outcome, loads(sims))
    finally:
        rig.close()


def summarise(outcome: Outcome, model_loads: int) -> dict[str, Any]:
    """Percentiles over every request; one cut off at the deadline counts with its time so far (a lower bound)."""
    cut = [DEADLINE - at for at in outcome.unfinished]
    n = len(outcome.done)
    finished = not outcome.unfinished
    makespan = (outcome.last_done - outcome.first_sent) if finished and n else DEADLINE - outcome.first_sent
    ttft = outcome.ttft + cut
    done = outcome.done + cut
    return {
        "n": n,
        "errors": outcome.errors,
        "unfinished": len(cut),
        "ttft_p50": pct(ttft, 0.5) if ttft else float("nan"),
        "ttft_p95": pct(ttft, 0.95) if ttft else float("nan"),
        "done_p95": pct(done, 0.95) if done else float("nan"),
        "makespan": makespan,
        "throughput": n / makespan if n else 0.0,
        "loads": model_loads,
        "samples": outcome.samples,
    }


def litellm_available() -> str:
    """'' when LiteLLM imports, else why not."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"{type(exc).__name__}: {exc}"
    return ""


def bench_scheduling(n: int) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Every dispatcher on the same workload; also why LiteLLM was left out, if it was."""
    requests = workload(n)
    names = ["round-robin", "least-busy", "corral", "corral-learned"]
    missing = litellm_available()
    if not missing:
        names.append("litellm")
    return [(name, scenario(name, requests)) for name in names], missing


LABELS = {
    "round-robin": "round-robin proxy (baseline)",
    "least-busy": "least-busy proxy",
    "corral": "Corral (API + 3 workers)",
    "corral-learned": "Corral, host capacity learned",
    "litellm": "LiteLLM Router (simple-shuffle)",
}


def table(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The markdown table: one row per dispatcher, ratios against round-robin in brackets."""
    base = dict(results)["round-robin"]

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        ratio = row[key] / base[key] if base[key] else float("nan")
        return f"{fmt.format(row[key])} ({ratio:.2f}x)"

    header = (
        "| dispatcher | done / failed / cut off | TTFT p50 | TTFT p95 | completion p95 | makespan | model loads "
        "| jobs/s |"
    )
    lines = [header, "|" + "---|" * 8]
    for name, row in results:
        lines.append(
            f"| {LABELS[name]} | {row['n']} / {row['errors']} / {row['unfinished']} | "
            f"{cell(row, 'ttft_p50', '{:.2f} s')} | "
            f"{cell(row, 'ttft_p95', '{:.2f} s')} | {cell(row, 'done_p95', '{:.2f} s')} | "
            f"{cell(row, 'makespan', '{:.1f} s')} | {cell(row, 'loads', '{}')} | {cell(row, 'throughput', '{:.0f}')} |"
        )
    return lines


def main(n: int) -> None:
    results, missing = bench_scheduling(n)
    print(
        f"\nScheduling benchmark: {n} streamed /api/generate requests in 10 bursts 3 s apart, Zipf(1.1) over 6 "
        f"models, at most {CLIENT_CONNECTIONS} open at once; 3 simulated hosts (speed 1.0/0.7/1.4, 2 models fit "
        f"each, 4 slots per loaded model, loads 10-20 s), every delay x{TIME_SCALE} (times below are real seconds, "
        f"from each request's due time); ratios vs round-robin\n"
    )
    print("\n".join(table(results)))
    print(f"\nA dispatcher gets {DEADLINE:.0f} s; requests still open then are cut off and count with their time so "
          "far, so its times and makespan are lower bounds.")  # fmt: skip
    if missing:
        print(f"\nLiteLLM left out: it does not import here ({missing}); `pip install litellm` to include it")
