"""Streaming responses written from the request's own task.

Starlette's ``StreamingResponse`` runs its body in an anyio task group beside a listener for the client's
disconnect (uvicorn speaks ASGI 2.3, whose ``send`` drops writes to a closed connection silently): a task group,
cancel scopes and a second task per response, set up in the moments after a streamed submit's enqueue, when the
worker and the engine need the CPU for the job's first token. ``LeanStream`` writes from the request's task and
listens with one plain asyncio task, which cancels the writing when the client goes away.
"""

from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class LeanStream(StreamingResponse):
    """A ``StreamingResponse`` (HTTP only) whose body is written from the calling task; a disconnect ends it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = asyncio.current_task()
        assert writer is not None
        gone = writing = False

        async def listen() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if writing:  # (it runs only while the writer waits: inside stream_response, or done with it)
                writer.cancel()

        listener = asyncio.get_running_loop().create_task(listen())
        try:
            writing = True
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:
                raise  # cancelled from outside (shutdown): not ours to swallow
            writer.uncancel()
        finally:
            writing = False
            listener.cancel()
        if self.background is not None and not gone:
            await self.background()
