"""The worker's pull progress: Ollama's lines turned into events with percent, speed and ETA, throttled."""

from __future__ import annotations

import pytest

from corral.worker.modelops import PROGRESS_EVERY, Progress

pytestmark = pytest.mark.unit
D = "sha256:" + "0" * 64


def test_progress_has_percent_speed_and_eta_and_is_throttled() -> None:
    p = Progress()
    assert p.event({"status": "pulling manifest"}, "w", 0.0) == {"type": "progress", "worker": "w",
                                                                  "status": "pulling manifest"}  # fmt: skip
    first = p.event({"status": "pulling 000", "digest": D, "total": 1000, "completed": 0}, "w", 1.0)
    assert first is not None and first["percent"] == 0.0 and first["eta"] is None
    assert p.event({"status": "pulling 000", "digest": D, "total": 1000, "completed": 100}, "w", 1.1) is None
    later = p.event(
        {"status": "pulling 000", "digest": D, "total": 1000, "completed": 500}, "w", 1.0 + PROGRESS_EVERY * 4
    )
    assert later is not None
    assert (later["percent"], later["speed"], later["eta"]) == (50.0, 500, 1.0)
    step = p.event({"status": "verifying sha256 digest"}, "w", 2.01)
    assert step == {"type": "progress", "worker": "w", "status": "verifying sha256 digest"}
