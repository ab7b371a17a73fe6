"""A TCP proxy on loopback between one Redis client (a worker) and Redis that loses what it is told to: the first
``drops`` reads from Redis that contain ``marker`` are not forwarded, and their connection is closed at once (a
reply, or a pub/sub message, lost with its connection, as when Redis dies or the network breaks after a script
ran). asyncio, in a thread of its own."""

from __future__ import annotations

import asyncio
import threading


class LossyProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.marker = b""
        self.drops = 0
        self.dropped = 0
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lossy-proxy", daemon=True)
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LossyProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(5)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def lose(self, marker: bytes, drops: int = 1) -> None:
        """From now on, lose the first ``drops`` reads from Redis that contain ``marker``."""

        async def arm() -> None:
            self.marker, self.drops, self.dropped = marker, drops, 0

        asyncio.run_coroutine_threadsafe(arm(), self.loop).result(5)

    def _lost(self, data: bytes) -> bool:
        if self.marker and self.dropped < self.drops and self.marker in data:
            self.dropped += 1
            return True
        return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_redis: bool) -> None:
            try:
                while data := await src.read(65536):
                    if from_redis and self._lost(data):
                        break
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                writer.close()
                up_writer.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
