"""``corral watch`` and ``corral submit --file`` against a real API, worker and Redis, with their exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from corral.cli.main import main
from corral.simulator import expected_text

from ..conftest import Stack
from ..support import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


class ClosedPipe(io.StringIO):
    """A stdout whose reader has gone (``| head`` after its lines)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def corral(api: str, *argv: str, stdin: str | None = None, out: io.StringIO | None = None) -> Ran:
    """Run the CLI in this process (as its entry point does, minus the interpreter start-up)."""
    out, err = out or io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {"CORRAL_API": api}),
        mock.patch.object(sys, "stdin", io.StringIO(stdin or "")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main(list(argv))
    return Ran(int(exited.value.code or 0), out.getvalue(), err.getvalue())


def test_watch_follows_a_job_to_its_end(stack: Stack) -> None:
    api, http = stack.api, stack.http
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "watch me"}).json()["id"]
    watched = corral(api, "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.strip() == expected_text("llama3", "watch me")
    assert f"job {job_id} (llama3:latest, generate): succeeded · in " in watched.stderr
    assert "[started on w-stack, attempt 1]" in watched.stderr and "tokens/s" in watched.stderr
    events = [json.loads(line) for line in corral(api, "watch", job_id, "--json").stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(len(events))) and events[-1]["type"] == "done"

    long_prompt = "w " * 4000  # the simulator echoes it: 20 s of tokens
    slow = http.post("/jobs", json={"model": "llama3", "prompt": long_prompt, "timeout": 0.3}).json()["id"]
    wait_for(lambda: http.get(f"/jobs/{slow}").json()["status"] == "failed", what="timed out")
    failed = corral(api, "watch", slow)
    assert failed.returncode == 1 and "failed" in failed.stderr and "timed out" in failed.stderr
    missing = corral(api, "watch", "0" * 32)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_a_batch_from_a_file_with_progress(stack: Stack, tmp_path: Path) -> None:
    api = stack.api
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('first\nsecond\n\n{"prompt": "third", "model": "qwen2.5:0.5b"}\n"fourth"\n')
    batch = corral(api, "submit", "llama3", "--file", str(prompts))
    assert batch.returncode == 0, batch.stderr
    rows = [line.split() for line in batch.stdout.splitlines()]
    assert len(rows) == 4 and all(status == "succeeded" for _id, status in rows)
    assert (
        batch.stderr.strip()
        .splitlines()[-1]
        .startswith("[##############################] 4/4  ok 4  failed 0")
    )
    views = [json.loads(line) for line in corral(api, "submit", "llama3", "--file", "-", "--json",
                                                 stdin="one\ntwo\n").stdout.splitlines()]  # fmt: skip
    assert [v["text"] for v in views] == [expected_text("llama3", p) for p in ("one", "two")]
    third = stack.http.get(f"/jobs/{rows[2][0]}").json()
    assert third["text"] == expected_text("qwen2.5:0.5b", "third")

    submitted = int(stack.redis.hget("corral:stats", "submitted") or 0)
    bad = corral(api, "submit", "llama3", "--file", "-", stdin="fine\n{oops\n")
    assert bad.returncode == 2 and "line 2: not valid JSON" in bad.stderr
    unknown = corral(api, "submit", "no-such-model", "--file", "-", stdin="x\n")
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    assert int(stack.redis.hget("corral:stats", "submitted") or 0) == submitted  # nothing was queued
    too_long = json.dumps({"prompt": "w " * 4000, "timeout": 0.2})
    one_fails = corral(api, "submit", "llama3", "--file", "-", stdin=f"ok\n{too_long}\n")
    assert one_fails.returncode == 1 and one_fails.stdout.split()[1::2] == ["succeeded", "failed"]


def test_usage_and_an_api_that_is_down() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    both = corral(down, "submit", "llama3", "hi", "--file", "x.txt")
    assert both.returncode == 2 and "one of the two" in both.stderr
    for argv in (["watch", "0" * 32], ["status", "0" * 32], ["submit", "llama3", "--file", "-"]):
        result = corral(down, *argv, stdin="hi\n")
        assert result.returncode == 3, (argv, result.stderr)
        assert "the API is unavailable" in result.stderr


def test_wait_prints_the_text_and_follow_the_tokens(stack: Stack) -> None:
    waited = corral(stack.api, "submit", "llama3", "wait for me", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == expected_text("llama3", "wait for me")
    view = json.loads(corral(stack.api, "submit", "llama3", "wait for me", "--wait", "--json").stdout)
    assert view["status"] == "succeeded" and view["text"] == expected_text("llama3", "wait for me")
    followed = corral(stack.api, "submit", "llama3", "follow me", "--follow")
    assert followed.returncode == 0 and followed.stdout.strip() == expected_text("llama3", "follow me")
    unknown = corral(stack.api, "submit", "not-here", "x", "--wait")
    assert unknown.returncode == 2 and 'submit with "wait": true' in unknown.stderr
    queued = corral(stack.api, "submit", "not-here", "x", "--queue-anyway")
    assert queued.returncode == 0
    assert stack.http.get(f"/jobs/{queued.stdout.strip()}").json()["status"] == "queued"
    stack.http.delete(f"/jobs/{queued.stdout.strip()}")


@pytest.mark.parametrize(
    "argv",
    [["workers"], ["queues"], ["jobs"], ["jobs", "--json"], ["submit", "llama3", "--file", "-", "--json"],
     ["submit", "llama3", "hi", "--follow"], ["watch", "JOB"], ["watch", "JOB", "--json"], ["status", "JOB"]],
    ids=" ".join,
)  # fmt: skip
def test_a_closed_pipe_ends_quietly(stack: Stack, argv: list[str]) -> None:
    job_id = stack.http.post("/jobs", json={"model": "llama3", "prompt": "piped"}).json()["id"]
    ran = corral(stack.api, *[job_id if a == "JOB" else a for a in argv], stdin="a\nb\n", out=ClosedPipe())
    assert ran.returncode == 141, ran.stderr  # stderr still has what it shows anyway (watch's status lines)
    assert "Traceback" not in ran.stderr and "BrokenPipe" not in ran.stderr


def test_a_real_pipe_closed_by_head(stack: Stack) -> None:
    """`corral watch ID | head -c 20` (tokens still coming) and `corral submit --file - --json | head -n 0` (the
    reader gone before the first line): no traceback."""
    env = {**os.environ, "CORRAL_API_URL": stack.api}
    job_id = stack.http.post("/jobs", json={"model": "llama3", "prompt": "w " * 400}).json()["id"]
    runs = [(["watch", job_id], "", 20), (["submit", "llama3", "--file", "-", "--json"], "p\n" * 5, 0)]
    for argv, stdin, head in runs:
        process = subprocess.Popen([sys.executable, "-m", "corral", *argv], env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(stdin.encode())
        process.stdin.close()
        assert len(process.stdout.read(head)) == head  # what `head` reads before it exits
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(60) == 141, stderr
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
        process.stderr.close()
