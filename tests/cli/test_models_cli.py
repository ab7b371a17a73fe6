"""``corral models``: the progress lines and the requests the subcommands send."""

from __future__ import annotations

import io

import pytest

from corral.cli.main import build_parser
from corral.cli.models import Bars, bar_line, request_of

pytestmark = pytest.mark.unit


def test_bar_line() -> None:
    running = {"status": "running", "total": 2e9, "completed": 1e9, "percent": 50.0, "speed": 2e8, "eta": 5,
               "step": "pulling abc"}  # fmt: skip
    line = bar_line("gpu-a", "phi3:latest", running, 6)
    assert line.startswith("gpu-a   phi3:latest  [############............]  50.0%  1.00 GB/2.00 GB")
    assert "0.20 GB/s" in line and "ETA 5s" in line and line.endswith("pulling abc")
    assert bar_line("b", "m", {"status": "failed", "error": "disk full"}, 1) == "b  m  failed: disk full"


def test_bars_off_a_terminal_print_a_line_per_host_each_ten_percent() -> None:
    out = io.StringIO()
    bars = Bars("m", ["a", "b"], out)
    for pct in (1, 5, 12, 14, 30):
        bars.update({"type": "progress", "worker": "a", "status": "pulling x", "total": 100, "completed": pct,
                     "percent": float(pct)})  # fmt: skip
    bars.update({"type": "host", "worker": "a", "status": "succeeded"})
    bars.update({"type": "moved", "worker": "b", "to": "c"})
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["a", "b", "a", "a", "a", "b", "c"]  # 1 %, 12 %, 30 %, done
    assert "100.0%" in lines[4] and "worker gone: to c" in lines[5]


def test_requests() -> None:
    parser = build_parser()
    args = parser.parse_args(["models", "pull", "phi3", "--hosts", "a,b"])
    assert request_of(args) == ("/models/pull", {"hosts": ["a", "b"], "model": "phi3"})
    args = parser.parse_args(["models", "load", "phi3", "--replicas", "2", "--keep-alive", "10m"])
    assert request_of(args) == ("/models/load", {"replicas": 2, "keep_alive": "10m", "model": "phi3"})
    args = parser.parse_args(["models", "cp", "a", "b"])
    assert request_of(args) == ("/models/copy", {"source": "a", "destination": "b"})
    assert request_of(parser.parse_args(["models", "rm", "x", "--all"] if False else ["models", "rm", "x"]))[
        0
    ] == ("/models/delete")
