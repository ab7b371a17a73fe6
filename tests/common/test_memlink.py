"""The in-process link (common/memlink.py): a pair of in-memory transports between a worker's link end and an API's
in the same process."""

from __future__ import annotations

import asyncio
import logging

import pytest

from corral.common import memlink


class Recorder(asyncio.Protocol):
    def __init__(self, fail: bool = False) -> None:
        self.data: list[bytes] = []
        self.lost = asyncio.get_running_loop().create_future()
        self.fail = fail
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("a broken reader")
        self.data.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_writes_reach_the_other_end_at_once_both_ways() -> None:
    async def main() -> None:
        far: list[Recorder] = []
        memlink.serve("ch", lambda: far.append(Recorder()) or far[-1])
        try:
            near = Recorder()
            transport = memlink.connect("ch", near)
            assert near.transport is transport and len(far) == 1
            transport.write(b"hello\n")
            assert far[0].data == [b"hello\n"]  # (no turn of the loop in between)
            assert far[0].transport is not None
            far[0].transport.write(bytearray(b"OK\n"))
            assert near.data == [b"OK\n"]
            assert transport.get_extra_info("peername") == memlink.PEERNAME
            assert transport.get_write_buffer_size() == 0
            transport.close()
            assert transport.is_closing() and far[0].transport.is_closing()
            transport.write(b"after close\n")
            assert far[0].data == [b"hello\n"]
            assert await near.lost is None and await far[0].lost is None
        finally:
            memlink.unserve("ch")

    run(main())


def test_a_channel_not_served_here_is_not_connected() -> None:
    async def main() -> None:
        memlink.serve("gone", Recorder)
        memlink.unserve("gone")
        assert not memlink.served("gone")
        with pytest.raises(KeyError):
            memlink.connect("gone", Recorder())

    run(main())


def test_a_failing_reader_closes_the_pair_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        memlink.serve("bad", lambda: Recorder(fail=True))
        try:
            near = Recorder()
            transport = memlink.connect("bad", near)
            with caplog.at_level(logging.ERROR, logger="corral.common.memlink"):
                transport.write(b"x\n")  # (the writer does not see the reader's error)
            assert transport.is_closing()
            assert await near.lost is None
        finally:
            memlink.unserve("bad")

    run(main())
    assert "its reader failed" in caplog.text
