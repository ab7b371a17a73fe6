"""Pure scheduling helpers: pop order, warm flags, the start-rate ETA."""

from __future__ import annotations

from datetime import datetime

import pytest

from common.schedule import estimated_start, pop_order, start_rate, warm_flags

pytestmark = pytest.mark.unit


def test_warm_models_come_first_each_group_rotated() -> None:
    models = ["a", "b", "c", "d"]
    assert pop_order(models, {"c", "a"}, 0) == ["a", "c", "b", "d"]
    assert pop_order(models, {"c", "a"}, 1) == ["c", "a", "d", "b"]
    assert pop_order(models, set(), 3) == ["d", "a", "b", "c"]
    assert warm_flags(["a", "b", "c"], {"c"}) == "001"


def test_start_rate_needs_recent_starts() -> None:
    now = 1000.0
    assert start_rate([], now) is None
    assert start_rate([999.0], now) is None
    assert start_rate([990.0, 995.0, 1000.0], now) == pytest.approx(0.2)
    assert start_rate([10.0, 20.0], now) is None  # too old to say anything about now


def test_estimated_start_from_position_and_rate() -> None:
    now = 1_700_000_000.0
    starts = [now - i for i in range(11)]  # one start per second
    eta = estimated_start(4, starts, now)
    assert eta is not None
    assert datetime.fromisoformat(eta.replace("Z", "+00:00")).timestamp() == pytest.approx(now + 5)
    assert estimated_start(4, [], now) is None
