"""Drop-in wire formats: Ollama's and OpenAI's requests turned into Corral jobs, and job events turned back into
their chunks and answers. Pure functions (no I/O); the API routes are thin shells around them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from corral.common import jsonfast
from corral.common.errors import InvalidRequest

GENERATE_FIELDS = ("prompt", "suffix", "system", "template", "context", "raw", "images", "format", "options",
                   "keep_alive", "think")  # fmt: skip
CHAT_FIELDS = ("messages", "tools", "format", "options", "keep_alive", "think")
EMBED_FIELDS = ("input", "truncate", "dimensions", "options", "keep_alive")
MESSAGE_FIELDS = ("role", "content", "thinking", "images", "tool_calls", "tool_name")
OPENAI_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
                  "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty"}  # fmt: skip


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("missing request body")
    try:
        body = jsonfast.loads_request(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


# -- Ollama ------------------------------------------------------------------------------------------------
def ollama_job(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A /jobs body from an Ollama request: known fields only (Ollama ignores the others)."""
    model = body.get("model") or body.get("name")
    if not model or not isinstance(model, str):
        raise InvalidRequest("model is required")
    fields = {"generate": GENERATE_FIELDS, "chat": CHAT_FIELDS, "embed": EMBED_FIELDS}.get(kind, ())
    job: dict[str, Any] = {"model": model, "kind": kind}
    job.update({k: body[k] for k in fields if body.get(k) is not None})
    if kind == "chat":
        messages = job.get("messages") or []
        if not isinstance(messages, list):
            raise InvalidRequest("messages must be a list")
        job["messages"] = [
            {k: m[k] for k in MESSAGE_FIELDS if isinstance(m, dict) and m.get(k) is not None}
            for m in messages
        ]
    if kind == "embed" and "input" not in job:
        job["input"] = body.get("prompt", "")
    return job


def ollama_chunk(event: dict[str, Any], model: str) -> dict[str, Any]:
    """The Ollama chunk a ``chunk`` event carries, with the model name the client asked for."""
    chunk = dict(event.get("ollama") or {})
    chunk["model"] = model
    if "created_at" not in chunk:  # (not setdefault: that formats the time for every chunk, which has it)
        chunk["created_at"] = now_rfc3339()
    return chunk


def ollama_final(
    kind: str, model: str, final: dict[str, Any], result: dict[str, Any] | None
) -> dict[str, Any]:
    """Ollama's last object: empty text when streamed, the whole reply when ``result`` is given."""
    out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if result:
            message = {k: v for k, v in (result.get("message") or message).items() if v not in (None, "", [])}
            message.setdefault("role", "assistant")
            message.setdefault("content", "")
        out["message"] = message
    else:
        out["response"] = (result or {}).get("text", "")
        if result and result.get("thinking"):
            out["thinking"] = result["thinking"]
    out["done"] = True
    out.update({k: v for k, v in final.items() if k != "model"})
    if kind == "chat":
        out.pop("context", None)
    return out


# -- OpenAI ------------------------------------------------------------------------------------------------
def _text_of(content: Any) -> tuple[str, list[str]]:
    """OpenAI content (a string or parts) → text and base64 images."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or a list of parts")
    texts, images = [], []
    for part in content:
        if not isinstance(part, dict):
            raise InvalidRequest("content parts must be objects")
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = (
                (part.get("image_url") or {}).get("url", "")
                if isinstance(part.get("image_url"), dict)
                else ""
            )
            if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
                raise InvalidRequest("image_url must be a base64 data: URL (Corral fetches no URLs)")
            images.append(url.split(",", 1)[1])
    return "".join(texts), images


def _openai_message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
        raise InvalidRequest("each message needs a role: system, user, assistant or tool")
    text, images = _text_of(message.get("content"))
    out: dict[str, Any] = {"role": message["role"], "content": text}
    if images:
        out["images"] = images
    calls = []
    given = message.get("tool_calls") or []
    if not isinstance(given, list) or not all(isinstance(c, dict) for c in given):
        raise InvalidRequest("tool_calls must be a list of objects")
    for call in given:
        fn = call.get("function") or {}
        if not isinstance(fn, dict):
            raise InvalidRequest("a tool call's function must be an object")
        fn = dict(fn)
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                fn["arguments"] = json.loads(args or "{}")
            except ValueError:
                raise InvalidRequest("tool call arguments must be JSON") from None
        calls.append({"function": fn})
    if calls:
        out["tool_calls"] = calls
    return out


def openai_options(body: dict[str, Any]) -> dict[str, Any]:
    options = {ours: body[theirs] for theirs, ours in OPENAI_OPTIONS.items() if body.get(theirs) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    return options


def openai_format(body: dict[str, Any]) -> Any:
    fmt = body.get("response_format") or {}
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "json"
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        return (spec.get("schema") if isinstance(spec, dict) else None) or "json"
    return None


def openai_chat_job(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not model or not isinstance(model, str):
        raise InvalidRequest("model is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list")
    job: dict[str, Any] = {"model": model, "kind": "chat", "messages": [_openai_message(m) for m in messages]}
    if body.get("tools"):
        job["tools"] = body["tools"]
    options = openai_options(body)
    if options:
        job["options"] = options
    fmt = openai_format(body)
    if fmt is not None:
        job["format"] = fmt
    if body.get("reasoning_effort") in ("low", "medium", "high"):
        job["think"] = body["reasoning_effort"]
    return job


def openai_completion_job(body: dict[str, Any]) -> dict[str, Any]:
    model, prompt = body.get("model"), body.get("prompt")
    if not model or not isinstance(model, str):
        raise InvalidRequest("model is required")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt and isinstance(prompt[0], str) else None
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string")
    job: dict[str, Any] = {"model": model, "kind": "generate", "prompt": prompt}
    if body.get("suffix"):
        job["suffix"] = body["suffix"]
    options = openai_options(body)
    if options:
        job["options"] = options
    return job


def finish_reason(final: dict[str, Any], tool_calls: bool = False) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if final.get("done_reason") == "length" else "stop"


def usage(final: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(final.get("prompt_eval_count") or 0), int(final.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama tool calls (arguments an object) → OpenAI's (arguments a JSON string)."""
    out = []
    for index, call in enumerate(calls):
        fn = call.get("function") or {}
        out.append({
            "id": call.get("id") or f"call_{index}",
            "index": index,
            "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": json.dumps(fn.get("arguments") or {})},
        })  # fmt: skip
    return out


def chat_chunk(job_id: str, model: str, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_corral",
        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
    }


def chat_completion(job_id: str, model: str, result: dict[str, Any]) -> dict[str, Any]:
    final = result.get("final") or {}
    message = result.get("message") or {"content": result.get("text", "")}
    calls = openai_tool_calls(message.get("tool_calls") or [])
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("thinking"):
        out_message["reasoning"] = message["thinking"]
    if calls:
        out_message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_corral",
        "choices": [{"index": 0, "message": out_message, "finish_reason": finish_reason(final, bool(calls))}],
        "usage": usage(final),
    }


def text_completion(
    job_id: str, model: str, text: str, final: dict[str, Any] | None, stream: bool
) -> dict[str, Any]:
    reason = finish_reason(final) if final is not None else None
    out: dict[str, Any] = {
        "id": f"cmpl-{job_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_corral",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}],
    }
    if final is not None and not stream:
        out["usage"] = usage(final)
    return out


def openai_error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
            404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "api_error")  # fmt: skip
    if status == 401:
        code = "invalid_api_key"  # what OpenAI sends, and what its clients look for
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
