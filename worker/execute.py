"""Running one job (asyncio): stream from the engine, publish every chunk, store the result — fenced, cancellable,
timed. The job's writes to Redis are in ``emitter``, the reply it gathers in ``reply``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.common.histograms import JobTiming, record_arguments, timing_increments
from corral.common.jobs import PoppedJob
from corral.common.jsonfast import dumps
from corral.common.logs import job_event, job_requeued, ms, short
from corral.common.schemas import RQ_TO_STATUS
from corral.common.store import AsyncJobStore, Timing

from .backends import Backend, BackendError, BackendModelMissing, BackendUnavailable, Early
from .emitter import Cancelled, Emitter, Fenced, with_redis_retry
from .http import TransportError
from .link import Direct, Links
from .reply import Reply

log = logging.getLogger(__name__)
STREAMED = {"corral.generate": "generate", "corral.chat": "chat"}  # job function -> the backend's stream kind


@dataclass
class Active:
    """A running job as the control listener sees it."""

    job: PoppedJob
    task: asyncio.Task[Any] | None = None
    cancel_requested: bool = False
    # the job's request, written to the backend before its task ran (JobRunner.send_early)
    early: Early | None = None
    # called once, when the backend has answered the job's request or the job ended
    on_accepted: Callable[[], None] | None = None
    # called once at the same moment for a job that found its model cold: the engine has loaded it by then
    on_loaded: Callable[[], None] | None = None

    def accepted(self) -> None:
        for name in ("on_accepted", "on_loaded"):
            callback = getattr(self, name)
            if callback is not None:
                setattr(self, name, None)
                callback()

    def request_cancel(self) -> None:
        """Cancelling the task closes the Ollama connection at once; Ollama stops generating."""
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel()


@dataclass
class Outcome:
    """What the worker loop learns from a job: whether the host looked unhealthy or lacked the model."""

    host_unavailable: bool = False
    model_missing: bool = False


class JobRunner:
    def __init__(
        self,
        store: AsyncJobStore,
        backend: Backend,
        worker_id: str,
        local_names: dict[str, str],
        links: Links | None = None,
    ):
        self.store = store
        self.links = links
        self.backend = backend
        self.worker_id = worker_id
        self.local_names = local_names
        self.on_final: Callable[[PoppedJob, dict[str, Any]], None] | None = None  # a job's final stats (Jobs)

    async def finish(
        self,
        job: PoppedJob,
        status: str,
        body: dict[str, Any],
        result: str = "",
        chunks: tuple[str, ...] = (),
        metrics: str = "",
    ) -> None:
        error = str(body.get("error", ""))
        if self.on_final is not None and body.get("final"):
            self.on_final(job, body["final"])
        timing = self.timing(job, RQ_TO_STATUS.get(status, "failed"), body.get("final") or {})

        async def call() -> bool:
            return await self.store.finish(
                job, self.worker_id, status, dumps(body), result, error, chunks, metrics, timing
            )

        if await with_redis_retry(call, "finish"):
            self.log_finished(job, RQ_TO_STATUS.get(status, "failed"), body.get("final") or {}, error)
        else:
            job_event("discarded", job.id, worker=self.worker_id, attempt=job.attempt,
                      reason="the job was re-queued meanwhile")  # fmt: skip

    def log_started(self, job: PoppedJob) -> None:
        """The job's ``started`` line (called after its task's first step: its request is on its way)."""
        job_event("started", job.id, model=job.model, worker=self.worker_id, attempt=job.attempt,
                  queued_ms=ms(job.queue_wait))  # fmt: skip

    def log_finished(self, job: PoppedJob, status: str, final: dict[str, Any], error: str) -> None:
        now = time.monotonic()
        tokens = as_int(final.get("eval_count"))
        eval_ns = as_int(final.get("eval_duration"))
        if tokens and eval_ns:
            rate: float | None = tokens / (eval_ns / 1e9)
        elif tokens and job.first_token_at is not None and now > job.first_token_at:
            rate = tokens / (now - job.first_token_at)
        else:
            rate = None
        job_event("finished", job.id, model=job.model, worker=self.worker_id, status=status, attempt=job.attempt,
                  duration_ms=ms(now - job.popped_at),
                  ttft_ms=None if job.first_token_at is None else ms(job.first_token_at - job.popped_at),
                  tokens=tokens, tokens_per_s=None if rate is None else round(rate, 1),
                  error=short(error) if error else None)  # fmt: skip

    @staticmethod
    def timing(job: PoppedJob, status: str, final: dict[str, Any]) -> Timing:
        """The job's timing for the fleet-wide histograms, which its FINISH call records."""
        now = time.monotonic()
        timing = JobTiming(
            model=job.model,
            status=status,
            duration=now - job.popped_at,
            queue_wait=job.queue_wait,
            first_token=None if job.first_token_at is None else job.first_token_at - job.popped_at,
            eval_count=as_int(final.get("eval_count")),
            eval_duration_ns=as_int(final.get("eval_duration")),
        )
        return record_arguments(timing_increments(timing))

    def backend_request(self, job: PoppedJob) -> dict[str, Any]:
        """The request the backend gets: the job's, with the model under this host's own name for it."""
        request = dict(job.kwargs.get("request") or {})
        model = str(request.get("model", job.model))
        request["model"] = self.local_names.get(model, model)
        return request

    def send_early(self, job: PoppedJob) -> Early | None:
        """Write a generation's request to the backend now, from the code that took the job, rather than once its
        task runs (a turn of the event loop and the task's set-up later): None when the job is not a generation
        or no kept connection is free. ``run`` reads the answer; a task cancelled before it ran must discard it."""
        if job.refusal or job.func_name not in STREAMED:
            return None
        return self.backend.send_now(STREAMED[job.func_name], self.backend_request(job))

    async def run(self, active: Active) -> Outcome:
        job = active.job
        if job.refusal:
            log.warning("job %s refused: %s", job.id, job.refusal)
            await self.finish(job, "failed", {"type": "error", "error": job.refusal})
            return Outcome()
        try:
            async with asyncio.timeout(max(job.popped_at + job.timeout - time.monotonic(), 0.001)):
                await self._execute(job, active.accepted, active.early)
        except asyncio.CancelledError:
            if not active.cancel_requested:
                raise  # the worker is shutting down: the job stays in flight and is re-queued
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await self.finish(job, "canceled", {"type": "cancelled", "reason": "cancelled while running"})
        except Cancelled:
            await self.finish(job, "canceled", {"type": "cancelled", "reason": "cancelled while running"})
        except Fenced:
            log.info("job %s attempt %d was taken over; stopped", job.id, job.attempt)
        except TimeoutError:
            await self.finish(
                job, "failed", {"type": "error", "error": f"job timed out after {job.timeout:g}s"}
            )
        except BackendModelMissing as exc:
            await self._requeue(job, f"model missing on {self.worker_id}: {exc.message}")
            return Outcome(model_missing=True)
        except BackendUnavailable as exc:
            await self._requeue(job, f"{self.backend.kind} on {self.worker_id} unavailable: {exc.message}")
            return Outcome(host_unavailable=True)
        except BackendError as exc:
            await self.finish(
                job, "failed", {"type": "error", "error": f"{self.backend.kind}: {exc.message}"}
            )
        return Outcome()

    async def _requeue(self, job: PoppedJob, reason: str) -> None:
        async def call() -> tuple[str, int]:
            return await self.store.requeue(
                job.id, reason, attempt=job.attempt_arg, worker_id=self.worker_id, counts=False
            )

        outcome = await with_redis_retry(call, "requeue")
        job_requeued(job.id, outcome, reason, model=job.model, worker=self.worker_id, attempt=job.attempt)

    async def _execute(
        self, job: PoppedJob, accepted: Callable[[], None], early: Early | None = None
    ) -> None:
        request = self.backend_request(job)
        if job.func_name == "corral.show":
            answer = await self.backend.show(request["model"])
            await self.finish(job, "finished", {"type": "done", "final": {}}, dumps({"show": answer}))
        elif job.func_name == "corral.embed":
            answer = await self.backend.embed(request)
            final = {k: v for k, v in answer.items() if k != "embeddings"}
            result = dumps({"embeddings": answer.get("embeddings") or [], "final": final})
            await self.finish(job, "finished", {"type": "done", "final": final}, result)
        else:
            await self._stream(job, request, accepted, job.func_name == "corral.chat", early)

    async def _stream(
        self,
        job: PoppedJob,
        request: dict[str, Any],
        accepted: Callable[[], None],
        chat: bool,
        early: Early | None = None,
    ) -> None:
        reply = Reply(chat)
        direct = Direct(self.links, job) if self.links is not None and job.kwargs.get("reply_to") else None
        emitter = Emitter(
            lambda batch: with_redis_retry(lambda: self.store.emit(job, self.worker_id, *batch), "emit"),
            lambda batch: self.store.emit_now(job, self.worker_id, batch),
        )
        try:
            async with self.backend.stream("chat" if chat else "generate", request, early) as stream:
                accepted()
                try:
                    async for chunk in stream:
                        if chunk.get("done"):
                            await self._succeed(job, reply, chunk, await emitter.close())
                            return
                        if job.first_token_at is None:
                            job.first_token_at = time.monotonic()
                        body = dumps(reply.add(chunk))
                        if direct is not None and direct.link_first and emitter.idle():
                            direct.send(body, True)  # (its reader cannot resume: the line before the emit)
                            emitter.add(body, now=False)
                        else:
                            written = emitter.add(body)
                            if direct is not None:
                                direct.send(body, written)
                except (TransportError, ValueError) as exc:
                    raise BackendUnavailable(f"stream broken: {exc}") from exc
            raise BackendUnavailable("stream ended without a final chunk")
        finally:
            emitter.abort()

    async def _succeed(
        self, job: PoppedJob, reply: Reply, final: dict[str, Any], pending: tuple[str, ...]
    ) -> None:
        stats = {k: v for k, v in final.items() if k not in ("response", "message", "created_at", "done")}
        await self.finish(job, "finished", {"type": "done", "final": stats}, dumps(reply.result(stats)), pending,
                          dumps(reply.metrics(job.popped_at, stats)))  # fmt: skip


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
