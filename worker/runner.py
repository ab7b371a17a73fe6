"""Running one job: stream from Ollama, publish every chunk, store the result — fenced, cancellable, timed."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import redis

from common.jobs import PoppedJob
from common.store import JobStore

from .ollama import OllamaClient, OllamaError, OllamaModelMissing, OllamaUnavailable, chunk_batches

log = logging.getLogger(__name__)
T = TypeVar("T")
FENCED, CANCEL_ASKED = -1, 1
REDIS_GIVE_UP = 120.0


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


class Fenced(Exception):
    """The job is no longer ours (re-queued to another worker): stop without writing."""


class Cancelled(Exception):
    pass


class TimedOut(Exception):
    pass


@dataclass
class Active:
    """A running job as the control listener sees it: cancel flag and the Ollama response to close."""

    job: PoppedJob
    cancel: threading.Event = field(default_factory=threading.Event)
    response: httpx.Response | None = None

    def request_cancel(self) -> None:
        """Called from the listener thread. Shutting the socket down wakes the slot thread blocked in a read
        at once, and Ollama sees the connection drop and stops generating."""
        self.cancel.set()
        response = self.response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Outcome:
    """What the worker loop learns from a job: whether the host looked unhealthy or lacked the model."""

    host_unavailable: bool = False
    model_missing: bool = False


def with_redis_retry(fn: Callable[[], T], what: str) -> T:
    """Redis calls of a running job survive a Redis restart: retry with backoff, log once, give up late."""
    deadline = time.monotonic() + REDIS_GIVE_UP
    delay, logged = 0.1, False
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if time.monotonic() > deadline:
                raise
            if not logged:
                log.warning("redis unavailable during %s (%s); retrying", what, exc)
                logged = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class JobRunner:
    def __init__(self, store: JobStore, ollama: OllamaClient, worker_id: str, local_names: dict[str, str]):
        self.store = store
        self.ollama = ollama
        self.worker_id = worker_id
        self.local_names = local_names

    # -- events -------------------------------------------------------------------------------------------
    def emit(self, active: Active, *bodies: str) -> None:
        if not bodies:
            return
        code = with_redis_retry(lambda: self.store.emit(active.job, self.worker_id, *bodies), "emit")
        if code == FENCED:
            raise Fenced
        if code == CANCEL_ASKED or active.cancel.is_set():
            raise Cancelled

    def finish(
        self, job: PoppedJob, status: str, body: dict[str, Any], result: str = "", error: str = ""
    ) -> None:
        def call() -> bool:
            return self.store.finish(job, self.worker_id, status, dumps(body), result, error)

        if not with_redis_retry(call, "finish"):
            log.info(
                "job %s attempt %d: result discarded, the job was re-queued meanwhile", job.id, job.attempt
            )

    # -- one job ------------------------------------------------------------------------------------------
    def run(self, active: Active) -> Outcome:
        job = active.job
        if job.refusal:
            log.warning("job %s refused: %s", job.id, job.refusal)
            self.finish(job, "failed", {"type": "error", "error": job.refusal}, error=job.refusal)
            return Outcome()
        try:
            self._execute(active)
        except Fenced:
            log.info("job %s attempt %d was taken over; stopped", job.id, job.attempt)
        except Cancelled:
            self.finish(job, "canceled", {"type": "cancelled", "reason": "cancelled while running"})
        except TimedOut:
            message = f"job timed out after {job.timeout:g}s"
            self.finish(job, "failed", {"type": "error", "error": message}, error=message)
        except OllamaModelMissing as exc:
            self._requeue(job, f"model missing on {self.worker_id}: {exc.message}")
            return Outcome(model_missing=True)
        except OllamaUnavailable as exc:
            if active.cancel.is_set():
                self.finish(job, "canceled", {"type": "cancelled", "reason": "cancelled while running"})
                return Outcome()
            self._requeue(job, f"ollama on {self.worker_id} unavailable: {exc.message}")
            return Outcome(host_unavailable=True)
        except OllamaError as exc:
            message = f"ollama: {exc.message}"
            self.finish(job, "failed", {"type": "error", "error": message}, error=message)
        return Outcome()

    def _requeue(self, job: PoppedJob, reason: str) -> None:
        log.warning("job %s: %s; re-queued", job.id, reason)
        with_redis_retry(
            lambda: self.store.requeue(
                job.id, reason, attempt=job.attempt_arg, worker_id=self.worker_id, counts=False
            ),
            "requeue",
        )

    def _execute(self, active: Active) -> None:
        job = active.job
        request = dict(job.kwargs.get("request") or {})
        model = str(request.get("model", job.model))
        request["model"] = self.local_names.get(model, model)
        if job.func_name == "corral.embed":
            self._embed(active, request)
        else:
            self._stream(active, request, chat=job.func_name == "corral.chat")

    def _deadline_check(self, job: PoppedJob) -> float:
        remaining = job.popped_at + job.timeout - time.monotonic()
        if remaining <= 0:
            raise TimedOut
        return remaining

    def _embed(self, active: Active, request: dict[str, Any]) -> None:
        job = active.job
        answer = self.ollama.post("/api/embed", request, timeout=self._deadline_check(job))
        final = {k: v for k, v in answer.items() if k != "embeddings"}
        result = dumps({"embeddings": answer.get("embeddings") or [], "final": final})
        self.finish(job, "finished", {"type": "done", "final": final}, result=result)

    def _stream(self, active: Active, request: dict[str, Any], chat: bool) -> None:
        job = active.job
        reply = Reply(chat)
        path = "/api/chat" if chat else "/api/generate"
        with self.ollama.stream(path, request, timeout=self._deadline_check(job)) as response:
            active.response = response
            if active.cancel.is_set():
                raise Cancelled
            try:
                for batch in chunk_batches(response):
                    events: list[str] = []
                    for chunk in batch:
                        if chunk.get("done"):
                            self._succeed(active, reply, chunk, events)
                            return
                        events.append(dumps(reply.add(chunk)))
                    self.emit(active, *events)
                    self._deadline_check(job)
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                if active.cancel.is_set():
                    raise Cancelled from exc
                raise OllamaUnavailable(f"stream broken: {exc}") from exc
        raise OllamaUnavailable("stream ended without a final chunk")

    def _succeed(self, active: Active, reply: Reply, final: dict[str, Any], pending: list[str]) -> None:
        stats = {k: v for k, v in final.items() if k not in ("response", "message", "created_at", "done")}
        result = dumps(reply.result(stats))

        def call() -> bool:
            body = dumps({"type": "done", "final": stats})
            return self.store.finish(
                active.job, self.worker_id, "finished", body, result, chunks=tuple(pending)
            )

        if not with_redis_retry(call, "finish"):
            log.info("job %s attempt %d: result discarded, the job was re-queued meanwhile", active.job.id,
                     active.job.attempt)  # fmt: skip


class Reply:
    """The reply so far: text, thinking and tool calls gathered from the chunks."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.parts: list[str] = []
        self.thinking: list[str] = []
        self.tool_calls: list[Any] = []

    def add(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """Take one chunk; return its ``chunk`` event."""
        text, event = chunk_event(chunk, self.chat)
        self.parts.append(text)
        if event.get("thinking"):
            self.thinking.append(event["thinking"])
        self.tool_calls += event.get("tool_calls") or []
        return event

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
