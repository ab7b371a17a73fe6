"""The batch file reader, the progress bar and the one-line job summaries of the CLI."""

from __future__ import annotations

import io

import pytest

from corral.cli.jobs import BatchError, Progress, describe, read_batch

pytestmark = pytest.mark.unit


def test_a_batch_file_mixes_prompts_json_bodies_and_json_strings() -> None:
    lines = ["why is the sky blue?\n", "\n", '{"prompt": "hi", "model": "qwen2.5:0.5b", "options": {"seed": 1}}\n',
             '"a \\"quoted\\" prompt"\n', "  indented prompt\n"]  # fmt: skip
    bodies = read_batch(lines, "llama3", {"wait": True})
    assert bodies == [
        {"model": "llama3", "wait": True, "prompt": "why is the sky blue?"},
        {"model": "qwen2.5:0.5b", "wait": True, "prompt": "hi", "options": {"seed": 1}},
        {"model": "llama3", "wait": True, "prompt": 'a "quoted" prompt'},
        {"model": "llama3", "wait": True, "prompt": "  indented prompt"},
    ]


@pytest.mark.parametrize(
    ("lines", "message"), [(["ok\n", "{not json\n"], "line 2"), (["\n", "  \n"], "no prompt")]
)
def test_a_bad_batch_file_is_refused_whole(lines: list[str], message: str) -> None:
    with pytest.raises(BatchError, match=message):
        read_batch(lines, "llama3", {})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_on_a_terminal_and_writes_lines_otherwise() -> None:
    counts = {"queued": 1, "running": 1, "succeeded": 1, "failed": 1, "cancelled": 0}
    tty = Terminal()
    bar = Progress(4, tty)
    bar.show(counts)
    bar.show({**counts, "queued": 0, "running": 0, "succeeded": 3}, final=True)
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("\n")
    assert "[###############---------------] 2/4  ok 1  failed 1  running 1  queued 1" in tty.getvalue()
    assert "4/4  ok 3  failed 1" in tty.getvalue()
    log = io.StringIO()
    Progress(4, log).show({**counts, "queued": 0, "running": 0, "succeeded": 3}, final=True)
    assert "\r" not in log.getvalue() and log.getvalue().count("\n") == 1


def test_describe_a_job() -> None:
    view = {"id": "j1", "model": "llama3:latest", "kind": "generate", "queue": "ollama:llama3:latest",
            "attempt": 1, "worker": "gpu-1"}  # fmt: skip
    assert describe({**view, "status": "queued", "queue_position": 2}).endswith("queued at position 2 on "
                                                                                "ollama:llama3:latest")  # fmt: skip
    assert describe({**view, "status": "running"}).endswith("running on gpu-1 (attempt 1)")
    done = {**view, "status": "succeeded", "started_at": "2024-05-01T12:00:00Z", "ended_at": "2024-05-01T12:00:02.5Z",
            "final": {"eval_count": 50, "eval_duration": 2_000_000_000}}  # fmt: skip
    assert describe(done) == ("job j1 (llama3:latest, generate): succeeded · in 2.50s on gpu-1 · 50 tokens · "
                              "25.0 tokens/s")  # fmt: skip
