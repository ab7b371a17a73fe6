"""One generate/chat request on the simulator: the tokens it answers and when, and Ollama's final statistics."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from .model import ModelSpec, Simulator, now_rfc3339, reply_words


def details(spec: ModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": f"{spec.size_gb * 2:.1f}B",
        "quantization_level": "Q4_K_M",
    }


def digest(spec: ModelSpec) -> str:
    return hashlib.sha256(spec.name.encode()).hexdigest()


def ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Generation:
    """One generate/chat request: tokens to send and the final statistics."""

    def __init__(self, sim: Simulator, spec: ModelSpec, body: dict[str, Any], chat: bool) -> None:
        self.sim, self.spec, self.body, self.chat = sim, spec, body, chat
        if chat:
            messages = body.get("messages") or []
            prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        else:
            prompt = body.get("prompt") or ""
        self.prompt = prompt
        options = body.get("options") or {}
        num_predict = options.get("num_predict")
        words = reply_words(spec.name, prompt, sim.config.min_tokens)
        self.done_reason = "stop"
        if isinstance(num_predict, int) and 0 <= num_predict < len(words):
            words, self.done_reason = words[:num_predict], "length"
        self.words = words
        self.tool_call = self._tool_call(body.get("tools") or [])
        self.started = time.monotonic()
        self.load_duration = 0.0

    def _tool_call(self, tools: list[Any]) -> dict[str, Any] | None:
        for index, tool in enumerate(tools):
            fn = (tool or {}).get("function") or {}
            if fn.get("name") and fn["name"] in self.prompt:
                return {
                    "id": f"call_{index}",
                    "function": {"index": index, "name": fn["name"], "arguments": {}},
                }
        return None

    def chunk(self, text: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.body["model"], "created_at": now_rfc3339()}
        if self.chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        out["done"] = False
        return out

    def final(self, text: str = "") -> dict[str, Any]:
        out = self.chunk(text)
        total = time.monotonic() - self.started
        eval_duration = max(total - self.load_duration, 1e-6)
        out.update(
            done=True,
            done_reason=self.done_reason,
            total_duration=ns(total),
            load_duration=ns(self.load_duration),
            prompt_eval_count=max(1, len(self.prompt.split())),
            prompt_eval_duration=ns(eval_duration / 10),
            eval_count=len(self.words),
            eval_duration=ns(eval_duration),
        )
        if not self.chat:
            out["context"] = list(range(1, min(len(self.words), 32) + 1))
        return out

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        await self.sim.sleep(self.sim.first_token_delay(self.spec))
        if self.tool_call and self.chat:
            chunk = self.chunk("")
            chunk["message"]["tool_calls"] = [self.tool_call]
            yield chunk
        else:
            per_token = self.sim.token_interval(self.spec)
            for i, word in enumerate(self.words):
                if i:
                    await self.sim.sleep(per_token)
                yield self.chunk(word)
        yield self.final()
