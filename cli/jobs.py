"""``corral watch ID`` and ``corral submit MODEL --file PROMPTS``: following jobs from a terminal.

Exit codes, as for every client command: 0 the job(s) succeeded, 1 a job failed or was cancelled, 2 a 4xx from
the API (bad input, unknown job or model), 3 the API or Redis is unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from corral.common.errors import BackendUnavailable, CorralError
from corral.common.schemas import TERMINAL_STATUSES, JobView
from corral.common.settings import Settings

from .failures import BAD_REQUEST, JOB_FAILED, OK, UNAVAILABLE, say
from .remote import api_base, api_client, fail, stream_events

if TYPE_CHECKING:
    from corral.client import Job


# -- corral watch -------------------------------------------------------------------------------------------
def seconds_between(start: str | None, end: str | None) -> float | None:
    if not (start and end):
        return None
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def describe(view: dict[str, Any]) -> str:
    """One line about a job: where it is, or how it ended."""
    head = f"job {view['id']} ({view['model']}, {view['kind']})"
    status = view["status"]
    if status == "queued":
        return f"{head}: queued at position {view.get('queue_position', '?')} on {view['queue']}"
    if status == "running":
        return f"{head}: running on {view.get('worker')} (attempt {view['attempt']})"
    parts = [f"{head}: {status}"]
    took = seconds_between(view.get("started_at"), view.get("ended_at"))
    if took is not None:
        parts.append(f"in {took:.2f}s on {view.get('worker')}")
    final = view.get("final") or {}
    if final.get("eval_count"):
        parts.append(f"{final['eval_count']} tokens")
        if final.get("eval_duration"):
            parts.append(f"{final['eval_count'] / (final['eval_duration'] / 1e9):.1f} tokens/s")
    if view.get("error"):
        parts.append(f"error: {view['error']}")
    return " · ".join(parts)


def show_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event), flush=True)
    elif event["type"] == "chunk":
        print(event["text"], end="", flush=True)
    elif event["type"] == "started":
        print(f"[started on {event['worker']}, attempt {event['attempt']}]", file=sys.stderr, flush=True)
    elif event["type"] == "retry":
        print(f"\n[retry: {event.get('reason')}; the text starts over]", file=sys.stderr, flush=True)


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    """Print a job's status, then its tokens as they arrive (or every event with ``--json``) until it ends."""
    with api_client(args, settings) as http:
        response = http.get(f"/jobs/{args.id}")
        if response.status_code != 200:
            return fail(response)
        if not args.json:
            print(describe(response.json()), file=sys.stderr, flush=True)
        last = stream_events(http, args.id, lambda event: show_event(event, args.json))
        response = http.get(f"/jobs/{args.id}")
        if not args.json:
            print()
            if response.status_code == 200:
                print(describe(response.json()), file=sys.stderr)
        return OK if last.get("type") == "done" else JOB_FAILED


# -- corral submit --file -----------------------------------------------------------------------------------
class BatchError(CorralError):
    code = "invalid_request"


def read_batch(lines: Iterable[str], model: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """Job bodies from a prompts file: a line is a prompt, or a JSON object (a ``POST /jobs`` body; ``model``
    defaults to MODEL), or a JSON string. Blank lines are skipped."""
    bodies = []
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.lstrip()[:1] in ("{", '"'):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise BatchError(f"line {number}: not valid JSON ({exc})", line=number) from None
            body = {"model": model, **defaults, **parsed} if isinstance(parsed, dict) else None
            bodies.append(body or {"model": model, **defaults, "prompt": str(parsed)})
        else:
            bodies.append({"model": model, **defaults, "prompt": text})
    if not bodies:
        raise BatchError("the prompts file holds no prompt")
    return bodies


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line a second (at most) otherwise."""

    def __init__(self, total: int, out: IO[str]) -> None:
        self.total, self.out = total, out
        self.tty = out.isatty()
        self.started = self.last_line = time.monotonic()

    def show(self, counts: dict[str, int], final: bool = False) -> None:
        done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        width = 30
        filled = width * done // self.total
        line = (f"[{'#' * filled}{'-' * (width - filled)}] {done}/{self.total}  ok {counts['succeeded']}  "
                f"failed {counts['failed'] + counts['cancelled']}  running {counts['running']}  "
                f"queued {counts['queued']}  {time.monotonic() - self.started:.1f}s")  # fmt: skip
        if self.tty:
            self.out.write("\r" + line + ("\n" if final else ""))
        elif final or time.monotonic() - self.last_line >= 1.0:
            self.out.write(line + "\n")
            self.last_line = time.monotonic()
        self.out.flush()


def follow_batch(jobs: list[Job], progress: Progress) -> dict[str, JobView]:
    """Poll the jobs until every one has ended, showing progress; their last views by id."""
    views: dict[str, JobView] = {}
    pending = list(jobs)
    while True:
        still = []
        for job in pending:
            view = views[job.id] = job.status()
            if view.status not in TERMINAL_STATUSES:
                still.append(job)
        pending = still
        counts = {s: 0 for s in ("queued", "running", "succeeded", "failed", "cancelled")}
        for view in views.values():
            counts[view.status] += 1
        progress.show(counts, final=not pending)
        if not pending:
            return views
        time.sleep(min(0.1 + 0.002 * len(pending), 1.0))


def cmd_submit_batch(args: argparse.Namespace, settings: Settings) -> int:
    """Submit one job per prompt of ``--file`` (``-`` = stdin), show progress until all end, print a line per
    job (``id status``; ``--json``: each job's final view, one per line)."""
    defaults: dict[str, Any] = {"wait": True} if args.queue_anyway else {}
    if args.system:
        defaults["system"] = args.system
    base = api_base(args, settings)
    try:
        if args.file == "-":
            bodies = read_batch(sys.stdin, args.model, defaults)
        else:
            with Path(args.file).open(encoding="utf-8") as handle:
                bodies = read_batch(handle, args.model, defaults)
        from corral.client import Client  # (here: the processes this package starts need no client)

        with Client(base, api_key=settings.api_key.get_secret_value() or None) as client:
            jobs = client.submit_many(bodies)
            views = follow_batch(jobs, Progress(len(jobs), sys.stderr))
    except OSError as exc:
        say("submit", str(exc))
        return BAD_REQUEST
    except CorralError as exc:  # an API that cannot be reached too: BackendUnavailable
        say("submit", exc.message)
        return UNAVAILABLE if isinstance(exc, BackendUnavailable) else BAD_REQUEST
    for job in jobs:
        view = views[job.id]
        print(view.model_dump_json(exclude_none=True) if args.json else f"{job.id}  {view.status}")
    return OK if all(v.status == "succeeded" for v in views.values()) else JOB_FAILED
