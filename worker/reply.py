"""A job's reply as it streams: each engine chunk becomes a ``chunk`` event, and the text, thinking and tool calls
are gathered for the result."""

from __future__ import annotations

import time
from typing import Any


class Reply:
    """The reply so far: text, thinking and tool calls gathered from the chunks."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.parts: list[str] = []
        self.thinking: list[str] = []
        self.tool_calls: list[Any] = []
        self.first_at: float | None = None

    def add(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """Take one chunk; return its ``chunk`` event."""
        if self.first_at is None:
            self.first_at = time.monotonic()
        text, event = chunk_event(chunk, self.chat)
        self.parts.append(text)
        if event.get("thinking"):
            self.thinking.append(event["thinking"])
        self.tool_calls += event.get("tool_calls") or []
        return event

    def metrics(self, started: float, stats: dict[str, Any]) -> dict[str, Any]:
        """For the job history: seconds to the first token (from the pop), tokens and tokens/s."""
        out: dict[str, Any] = {}
        if self.first_at is not None:
            out["ttft"] = round(self.first_at - started, 4)
        tokens = stats.get("eval_count")
        if isinstance(tokens, int):
            out["eval_count"] = tokens
            seconds = (stats.get("eval_duration") or 0) / 1e9
            if not seconds and self.first_at is not None:
                seconds = time.monotonic() - self.first_at
            if seconds > 0:
                out["tokens_per_s"] = round(tokens / seconds, 2)
        return out

    def result(self, stats: dict[str, Any]) -> dict[str, Any]:
        text, thinking = "".join(self.parts), "".join(self.thinking)
        result: dict[str, Any] = {"text": text, "final": stats}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if self.tool_calls:
                message["tool_calls"] = self.tool_calls
            result["message"] = message
        elif thinking:
            result["thinking"] = thinking
        return result


def chunk_event(chunk: dict[str, Any], chat: bool) -> tuple[str, dict[str, Any]]:
    """The text of one Ollama chunk and the ``chunk`` event carrying it (with the raw chunk's fields)."""
    if chat:
        message = chunk.get("message") or {}
        text = str(message.get("content") or "")
        extra = {k: message[k] for k in ("thinking", "tool_calls") if message.get(k)}
    else:
        text = str(chunk.get("response") or "")
        extra = {"thinking": chunk["thinking"]} if chunk.get("thinking") else {}
    return text, {"type": "chunk", "text": text, **extra, "ollama": chunk}
