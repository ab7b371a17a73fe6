"""``Order``: a reader's events in order, once, from Redis and from the direct link (common/link.py)."""

from __future__ import annotations

import pytest

from corral.api.bus import RESYNC, Event
from corral.api.follow import Order
from corral.common import link

pytestmark = pytest.mark.unit
JOB = "a" * 32


def event(
    seq: int, body: str = '{"type":"chunk","text":"x"}', attempt: str = "1", direct: bool = False
) -> Event:
    return Event(link.event_line(JOB, seq, attempt, body)[:-1], direct=direct)


def seqs(items: list[Event], order: Order) -> list[tuple[int, bool]]:
    events, reread = order.take(items)
    assert not reread
    return [(e["seq"], getattr(e, "direct", False)) for e in events]


def test_a_link_event_goes_first_and_its_copy_from_redis_confirms_it() -> None:
    order = Order(1)
    assert seqs([event(2, direct=True), event(3, direct=True)], order) == [(2, True), (3, True)]
    assert seqs([event(2), event(3)], order) == []  # the copies: nothing twice
    assert not order.unconfirmed and not order.stale
    assert seqs([event(4)], order) == [(4, False)]  # Redis' copy first: the link's comes too late
    assert seqs([event(4, direct=True)], order) == []


def test_a_link_event_out_of_turn_waits_for_redis() -> None:
    order = Order(0)  # the started event (seq 1) has not arrived yet
    assert seqs([event(2, direct=True)], order) == []
    assert seqs([event(1, '{"type":"started","worker":"w"}'), event(2)], order) == [(1, False), (2, False)]


def test_when_redis_differs_the_record_wins_and_the_contradicted_attempt_is_ignored_after() -> None:
    """The worker sent chunk 3 after its job was re-queued: Redis' seq 3 is the retry event (attempt 2)."""
    order = Order(1)
    assert seqs([event(2, direct=True), event(3, direct=True)], order) == [(2, True), (3, True)]
    retry = event(3, '{"type":"retry","reason":"worker w died"}', attempt="2")
    assert seqs([event(2), retry], order) == [(3, False)]
    assert order.stale == 1
    assert seqs([event(4, direct=True)], order) == []  # the lost attempt's link events, ignored
    started = event(4, '{"type":"started","worker":"w2"}', attempt="2")
    assert seqs([started, event(5, attempt="2", direct=True)], order) == [
        (4, False),
        (5, True),
    ]  # the new one's


def test_a_gap_or_a_resync_reads_the_stream() -> None:
    order = Order(1)
    assert order.take([event(4)]) == ([], True)
    assert order.take([RESYNC]) == ([], True)
    assert order.after([{"seq": 1}, {"seq": 2}, {"seq": 3}]) == [{"seq": 2}, {"seq": 3}]
    assert order.last == 3


def test_unconfirmed_link_events_are_bounded() -> None:
    order = Order(0)
    order.take([event(seq, direct=True) for seq in range(1, 1001)])
    assert order.last == 1000 and len(order.unconfirmed) <= 256
