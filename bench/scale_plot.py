"""The curves of ``bench.scale`` as PNGs (docs/img/scale-*.png): the run labelled ``after`` (full, else quick), and
the ``before`` run beside it where there is one (the same measures on the code before a fix).

    python -m bench.scale_plot   # redraw from .corral/bench-scale/*.json

matplotlib is a benchmark dependency only (the ``bench`` extra), never the product's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .harness import ROOT


def load(folder: Path, label: str) -> dict[str, Any] | None:
    for name in (f"{label}.json", f"{label}-quick.json"):
        if (folder / name).exists():
            return dict(json.loads((folder / name).read_text()))
    return None


def net_scripts(row: dict[str, Any]) -> float:
    """Script calls (EVALSHA: enqueue's share, pops, finish) per job of a burst, net of the idle fleet's (its
    idle pops) meanwhile; from a run before ``scripts_s`` was recorded, the idle pops (SLOWLOG) stand in."""
    burst, idle = row["burst"], row["idle"]
    if "calls_per_job" not in burst:
        return float("nan")
    rate = idle.get("scripts_s", idle["pops_s"])
    return float(burst["calls_per_job"].get("evalsha", 0) - rate * burst["window_s"] / max(burst["jobs"], 1))


def plot(folder: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {label: run for label in ("before", "after") if (run := load(folder, label))}
    out.mkdir(parents=True, exist_ok=True)
    queues = {label: run["queue"] for label, run in runs.items() if run.get("queue")}
    if queues:  # (--fleet-only runs leave the queue curves as they were)
        plot_queue(plt, queues, out)
    fleets = {label: run["fleet"] for label, run in runs.items() if run.get("fleet")}
    if fleets:
        plot_fleet(plt, fleets, out)


STYLES: dict[str, dict[str, Any]] = {"before": dict(linestyle="--", alpha=0.6), "after": dict(linestyle="-")}


def plot_queue(plt: Any, queues: dict[str, list[dict[str, Any]]], out: Path) -> None:
    styles = STYLES
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, q in queues.items():
        x = [row["queued"] for row in q]
        keys = (
            ("enqueue_us", "enqueue"),
            ("pop_us", "pop, 49 models"),
            ("pop_hot_us", "pop, hot model (40 %)"),
        )
        for key, name in keys:
            values = [row[key]["p50"] for row in q]
            axes[0].plot(x, values, marker="o", label=f"{name} p50 ({label})", **styles[label])
        axes[1].plot(x, [row["bytes_per_job"] for row in q], marker="o", label=label, **styles[label])
    axes[0].set(xscale="log", xlabel="jobs queued (50 models)", ylabel="Redis time per call (us)",
                title="script time vs queue length")  # fmt: skip
    axes[1].set(xscale="log", xlabel="jobs queued", ylabel="bytes", title="Redis memory per queued job")
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scale-queue.png", dpi=110)
    plt.close(fig)


def plot_fleet(plt: Any, fleets: dict[str, list[dict[str, Any]]], out: Path) -> None:
    styles = STYLES
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    panels = [
        (lambda r: r["burst"]["jobs_s"], "jobs/s", "dispatch rate (instant engine)"),
        (lambda r: r["burst"]["pop_us"]["p50"], "us", "pop script p50 (burst)"),
        (lambda r: r["burst"]["redis_cpu_us_per_job"], "us", "Redis CPU per job"),
        (lambda r: r["idle"]["heartbeats_s"], "per s", "heartbeats written (idle)"),
        (lambda r: r["janitor"]["ms"], "ms", "janitor pass"),
        (lambda r: r["dead"]["p50"], "s", "dead worker's jobs running again (p50)"),
    ]
    for ax, (get, unit, title) in zip(axes.flat, panels, strict=True):
        for label, rows in fleets.items():
            ax.plot(
                [r["workers"] for r in rows], [get(r) for r in rows], marker="o", label=label, **styles[label]
            )
        ax.set(xlabel="workers", ylabel=unit, title=title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    twins = [
        (axes.flat[1], net_scripts, "script calls per job"),
        (
            axes.flat[2],
            lambda r: r["burst"].get("net_commands_per_job", r["burst"]["commands_per_job"]),
            "Redis commands per job",
        ),
        (axes.flat[3], lambda r: r["idle"]["redis_cpu_pct"], "idle Redis CPU %"),
    ]
    for ax, get, unit in twins:
        twin = ax.twinx()
        for label, rows in fleets.items():
            twin.plot([r["workers"] for r in rows], [get(r) for r in rows], color="grey", marker="x",
                      label=f"{unit} ({label})", **styles[label])  # fmt: skip
        twin.set_ylabel(unit)
        twin.set_ylim(bottom=0)
        twin.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "scale-fleet.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    plot(ROOT / ".corral" / "bench-scale", ROOT / "docs" / "img")
