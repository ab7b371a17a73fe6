"""Pure scheduling helpers: pop order, warm flags, the start-rate ETA."""

from __future__ import annotations

from datetime import datetime

import pytest

from corral.common.schedule import (
    Capacity,
    Switch,
    SwitchSignal,
    choose_victim,
    decode_switch,
    estimated_start,
    plan_pop,
    pop_order,
    start_rate,
    warm_flags,
)

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


def test_below_capacity_warm_first_then_cold() -> None:
    models = ["a", "b", "c"]
    assert plan_pop(models, {"b"}, {"b"}, 2, None, 0) == (
        ["b", "a", "c"],
        "1cc",
    )  # room: aged cold jobs first
    assert plan_pop(models, {"b"}, {"a", "b", "c"}, 0, None, 0) == (["b", "a", "c"], "1cc")  # 0: no limit
    # two loaded, one of them running: a third model would evict the idle one; it waits the switch delay ('e')
    assert plan_pop(models, {"a", "b"}, {"a"}, 2, None, 0) == (["a", "b", "c"], "11e")
    assert plan_pop(models, {"a", "b"}, {"a"}, 0, None, 0) == (["a", "b", "c"], "11c")  # capacity unknown


def test_at_capacity_only_running_models_are_taken_the_others_probed() -> None:
    models = ["a", "b", "c", "d"]
    # d is loaded but idle: taking it would evict a running model, so it is probed like the cold ones
    assert plan_pop(models, {"a", "b", "d"}, {"a", "b"}, 2, None, 0) == (["a", "b", "c", "d"], "11ss")


def test_a_switch_drains_its_victim_then_offers_its_target_first() -> None:
    models = ["a", "b", "c"]
    switch = Switch(target="c", victim="a")
    assert plan_pop(models, {"a", "b"}, {"a", "b"}, 2, switch, 0) == (
        ["b", "c"],
        "1r",
    )  # a drains, c reserved
    assert plan_pop(models, {"a", "b"}, {"b"}, 2, switch, 0) == (["c", "b"], "t1")  # room: c first


def test_the_victim_is_a_model_others_serve_else_the_least_queued() -> None:
    signal = SwitchSignal("c", {"a": (50, 0), "b": (3, 0)})
    assert choose_victim(signal, {"a", "b"}, 2) == "b"
    signal = SwitchSignal("c", {"a": (50, 1), "b": (3, 0)})
    assert (
        choose_victim(signal, {"a", "b"}, 2) == "a"
    )  # another worker has a warm: giving it up costs no load
    assert (
        choose_victim(signal, {"a"}, 2) == choose_victim(signal, set(), 2) == ""
    )  # jobs ended: room already


def test_a_switch_without_victim_takes_its_target_first() -> None:
    assert plan_pop(["a", "b", "c"], {"a"}, {"a"}, 2, Switch("c", ""), 0) == (["c", "a", "b"], "t1c")


def test_switch_reply_decodes() -> None:
    reply = [b"switch", b"c", b"a", 5, 1, b"b", 0, 0]
    assert decode_switch(reply) == SwitchSignal("c", {"a": (5, 1), "b": (0, 0)})
    assert decode_switch([b"job-id", b"1", b"{}", b"", b"m", b""]) is None
    assert decode_switch(1500) is None and decode_switch(None) is None


def test_capacity_is_learned_from_an_eviction_not_from_an_expiry() -> None:
    capacity = Capacity()
    assert capacity.limit == 0  # unknown: no limit
    assert not capacity.observe({"a"}, {"a"})
    assert not capacity.observe({"a", "b"}, {"a", "b"})
    assert not capacity.observe({"b"}, set())  # a expired (idle, nothing waiting): says nothing
    assert capacity.limit == 0
    assert capacity.observe({"b", "c"}, {"b", "c"}) is False  # grew: no eviction
    assert capacity.observe({"c", "d"}, {"c", "d"})  # b left as d arrived: evicted
    assert capacity.limit == 2
    assert not capacity.observe({"c", "d", "e"}, set()) and capacity.limit == 3  # it can still grow


def test_capacity_learned_while_a_running_model_waits_for_memory() -> None:
    capacity = Capacity()
    capacity.observe({"a", "b"}, {"a", "b"})
    assert capacity.observe({"b"}, {"b", "c"})  # a left while c (running) is not loaded yet: an eviction
    assert capacity.limit == 2


def test_configured_capacity_wins() -> None:
    capacity = Capacity(3)
    assert capacity.limit == 3
    capacity.observe({"a", "b"}, set())
    assert not capacity.observe({"b", "c"}, set()) and capacity.limit == 3
