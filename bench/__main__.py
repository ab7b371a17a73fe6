"""`make bench`: run the benchmarks and print one table (ratios against a baseline measured in the same run)."""

from __future__ import annotations

import argparse
import os

from .core import bench_throughput, bench_ttft
from .dropin import bench_dropin
from .engine import bench_engine
from .failover import bench_failover
from .firsttoken import main as bench_first_token
from .scheduling import main as bench_scheduling


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def ci(summary: dict[str, float]) -> str:
    """The 95 % confidence interval of a summary's median."""
    return f"95% CI {summary['lo'] * 1000:.2f}-{summary['hi'] * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer samples (CI smoke)")
    parser.add_argument("--scheduling", action="store_true", help="only the scheduling benchmark")
    parser.add_argument("--no-scheduling", action="store_true", help="skip the scheduling benchmark")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("CORRAL_BENCH_QUICK") == "1"
    scheduling = ["--n", "400", "--runs", "1"] if quick else []
    if args.scheduling:
        bench_scheduling(scheduling)
        return
    n_ttft, n_jobs, n_kills = (30, 300, 3) if quick else (200, 3000, 20)

    ttft = bench_ttft(n_ttft)
    tput = bench_throughput(n_jobs, concurrency=64)
    tput_one = bench_throughput(n_jobs, concurrency=64, one_process=True)
    fail = bench_failover(n_kills)
    dropin = bench_dropin(n_ttft // 2)
    engine = bench_engine(n_ttft // 2)
    rows = [
        ("TTFT p50, simulator direct (baseline)", ms(ttft["direct"]["p50"]), "1.00x", ""),
        ("TTFT p50, through Corral (POST stream)", ms(ttft["corral"]["p50"]),
         f"{ttft['corral']['p50'] / ttft['direct']['p50']:.2f}x", "API and worker: two processes"),
        ("TTFT p95, simulator direct (baseline)", ms(ttft["direct"]["p95"]), "1.00x", ""),
        ("TTFT p95, through Corral (POST stream)", ms(ttft["corral"]["p95"]),
         f"{ttft['corral']['p95'] / ttft['direct']['p95']:.2f}x", ""),
        ("added TTFT p50 (paired)", ms(ttft["added"]["p50"]), "", f"target <= 3 ms; {ci(ttft['added'])}"),
        ("added TTFT p95 (paired)", ms(ttft["added"]["p95"]), "", ""),
        ("TTFT p50, POST then GET events", ms(ttft["two_step"]["p50"]),
         f"{ttft['two_step']['p50'] / ttft['direct']['p50']:.2f}x", "two requests"),
        ("added TTFT p50, POST then GET events", ms(ttft["added_two_step"]["p50"]), "", ci(ttft["added_two_step"])),
        ("added TTFT p50/p95, Ollama /api/generate", f"{ms(dropin['generate']['added_p50'])} / "
         f"{ms(dropin['generate']['added_p95'])}", "", "vs simulator /api/generate"),
        ("added per chunk p50/p95, Ollama /api/generate", f"{ms(dropin['generate']['chunk_p50'])} / "
         f"{ms(dropin['generate']['chunk_p95'])}", "", "40 tokens at 200/s"),
        ("added TTFT p50/p95, OpenAI /v1/chat/completions", f"{ms(dropin['openai']['added_p50'])} / "
         f"{ms(dropin['openai']['added_p95'])}", "", "vs simulator /api/chat"),
        ("added per chunk p50/p95, /v1/chat/completions", f"{ms(dropin['openai']['chunk_p50'])} / "
         f"{ms(dropin['openai']['chunk_p95'])}", "", ""),
        ("TTFT p50, llama.cpp server direct (real engine)", ms(engine["direct"]["p50"]), "1.00x",
         "tiny model, /v1/completions"),
        ("added TTFT p50/p95, llama.cpp server via POST /jobs stream", f"{ms(engine['added_jobs']['p50'])} / "
         f"{ms(engine['added_jobs']['p95'])}", f"{engine['jobs']['p50'] / engine['direct']['p50']:.2f}x",
         ci(engine["added_jobs"])),
        ("added TTFT p50/p95, llama.cpp server via /v1/completions", f"{ms(engine['added_dropin']['p50'])} / "
         f"{ms(engine['added_dropin']['p95'])}", f"{engine['dropin']['p50'] / engine['direct']['p50']:.2f}x",
         ci(engine["added_dropin"])),
        ("requests/s, simulator direct (baseline)", f"{tput['direct_rate']:.0f}/s", "1.00x", ""),
        ("jobs/s end to end through Corral", f"{tput['corral_rate']:.0f}/s",
         f"{tput['corral_rate'] / tput['direct_rate']:.2f}x", "target >= 500/s"),
        ("jobs/s, the API and its worker in one process", f"{tput_one['corral_rate']:.0f}/s",
         f"{tput_one['corral_rate'] / tput_one['direct_rate']:.2f}x", "corral api --worker (corral up)"),
        (f"enqueued -> done p50, {n_jobs} jobs at saturation", ms(tput["latency_p50"]), "", ""),
        (f"enqueued -> done p95, {n_jobs} jobs at saturation", ms(tput["latency_p95"]), "", ""),
        (f"dead worker -> job running again, p50 of {fail['n']} kills", f"{fail['p50']:.2f} s", "",
         "defaults: heartbeat 2 s, TTL 6 s"),
        (f"dead worker -> job running again, max of {fail['n']} kills", f"{fail['max']:.2f} s", "", "target <= 10 s"),
        ("redis kill -9 + restart -> API accepts jobs", f"{fail['redis']['api']:.2f} s", "", ""),
        ("redis kill -9 + restart -> a new job done", f"{fail['redis']['job_done']:.2f} s", "", ""),
        ("idle worker RSS", f"{tput['idle_rss']['worker']:.1f} MB", "", "target <= 80 MB"),
        ("idle API RSS", f"{tput['idle_rss']['api']:.1f} MB", "", ""),
        ("worker RSS after load", f"{tput['after_rss']['worker']:.1f} MB", "", ""),
        ("API RSS after load", f"{tput['after_rss']['api']:.1f} MB", "", ""),
        ("idle RSS, the API and its worker in one process", f"{tput_one['idle_rss']['api']:.1f} MB", "", ""),
    ]  # fmt: skip
    print(
        f"\nCorral core benchmark: {n_ttft} sequential TTFT pairs (simulator: 20 ms to first token); {n_jobs} jobs "
        "from 64 concurrent clients against an instant simulator, one worker with 16 slots; 2 cores shared by "
        "Redis, API, worker, simulator and the load generator\n"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "value", "ratio", "note")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(f"| {line} |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    # the added time to first token of three routes, keep-alive and new connections, quiet and busy
    bench_first_token(["--pairs", "10", "--rounds", "1"] if quick else [])
    if not args.no_scheduling:
        bench_scheduling(scheduling)


if __name__ == "__main__":
    main()
