"""The chunk hub's per-reader mailbox: in order, a waiting reader wakes on a put, nothing is lost."""

from __future__ import annotations

import asyncio
import weakref

import pytest

from corral.api.bus import Mailbox

pytestmark = pytest.mark.unit


def test_items_come_out_in_order_and_a_waiting_reader_wakes_on_a_put() -> None:
    async def scenario() -> None:
        box = Mailbox()
        box.put_nowait(b"a")
        assert await box.get() == b"a" and box.empty()
        reader = asyncio.create_task(box.get())
        await asyncio.sleep(0)  # it waits
        assert not reader.done()
        box.put_nowait(b"b")
        box.put_nowait(b"c")
        assert await asyncio.wait_for(reader, 5) == b"b"
        assert box.qsize() == 1 and box.get_nowait() == b"c"
        with pytest.raises(asyncio.QueueEmpty):
            box.get_nowait()

    asyncio.run(scenario())


def test_a_reader_cancelled_while_waiting_leaves_the_mailbox_usable() -> None:
    async def scenario() -> None:
        box = Mailbox()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await box.get()
        box.put_nowait(b"x")  # no waiter left behind to set
        assert await box.get() == b"x"
        ref = weakref.ref(box)  # the hub keeps mailboxes in a WeakValueDictionary
        assert ref() is box

    asyncio.run(scenario())
