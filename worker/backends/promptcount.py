"""Prompt tokens of a stream whose server sent no usage. llama-cpp-python's server ignores
``stream_options.include_usage``: its streams carry no ``usage``, so ``prompt_eval_count`` (and the drop-in routes'
``usage.prompt_tokens``) would be missing. After such a stream has ended (never on the way to the first token) the
worker asks the server once more:

- a generate (``/v1/completions``): ``POST /extras/tokenize/count`` with the prompt, llama-cpp-python's own count
  (the same tokenizer call its completion makes: no model run);
- a chat: the chat template is applied inside the server, which has no endpoint for it, so the request again,
  not streamed, with ``max_tokens: 1``: its ``usage.prompt_tokens`` (the prompt is in the engine's cache: one token
  to evaluate, one to sample).

Only servers that answer ``/extras/tokenize/count`` are asked (found out on the first stream without usage; a
server without it is never asked again). Bounded by ``TIMEOUT``: on a miss the count stays absent, as before. The
server takes one request at a time, so a worker on it should have one slot (a second slot's generation would hold
the count back)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..http import LeanClient, TransportError
from .errors import BackendError
from .pool import Connection, HttpPool

TIMEOUT = 5.0  # seconds for the count; the job's final chunk waits for it


class PromptCounter:
    def __init__(self, connection: Connection, pool: HttpPool, prefix: str) -> None:
        root = connection.url.rstrip("/")
        root = root.removesuffix("/v1")
        self.pool, self.prefix = pool, prefix
        self.client = LeanClient(root, headers=connection.headers, connect_timeout=connection.connect_timeout,
                                 ssl_context=connection.ssl_context(), read_timeout=TIMEOUT)  # fmt: skip
        self.lock = asyncio.Lock()  # one kept connection
        self.supported: bool | None = None  # None: not asked yet

    async def close(self) -> None:
        await self.client.aclose()

    async def tokenize_count(self, model: str, text: str) -> int | None:
        async with self.lock:
            response = await self.client.request(
                "POST", "/extras/tokenize/count", {"model": model, "input": text}
            )
        if response.status_code == 404:
            self.supported = False
            return None
        if response.status_code != 200:
            return None
        self.supported = True
        count = (await response.json()).get("count")
        return int(count) if isinstance(count, int) else None

    async def chat_count(self, body: dict[str, Any]) -> int | None:
        probe = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        answer = await self.pool.request(
            "POST", self.prefix + "/chat/completions", {**probe, "max_tokens": 1}
        )
        usage = answer.get("usage") if isinstance(answer, dict) else None
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return int(tokens) if isinstance(tokens, int) else None

    async def count(self, body: dict[str, Any], chat: bool) -> int | None:
        """The prompt tokens of the request ``body`` (the streamed OpenAI body), or None."""
        if self.supported is False:
            return None
        try:
            async with asyncio.timeout(TIMEOUT):
                if not chat:
                    return await self.tokenize_count(body["model"], str(body.get("prompt") or ""))
                if self.supported is None and await self.tokenize_count(body["model"], "") is None:
                    return None
                return await self.chat_count(body)
        except (TransportError, BackendError, TimeoutError, ValueError, AttributeError):
            return None
