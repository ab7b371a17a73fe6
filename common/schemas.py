"""Pydantic schemas shared by the API, the worker and the client: requests, job views, events, workers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import InvalidRequest, PayloadTooLarge
from .inputs import check_image, check_options
from .names import normalise_model

JobKind = Literal["generate", "chat", "embed", "show"]
Priority = Literal["high", "normal", "low"]
ANONYMOUS = "anonymous"  # the submitter of a job that names none
SUBMITTER_PATTERN = r"^[^\s|]{1,128}$"
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_EVENTS = frozenset({"done", "error", "cancelled"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

# RQ's status words, as stored in rq:job:<id>, and the words Corral shows.
RQ_TO_STATUS: dict[str, JobStatus] = {
    "queued": "queued",
    "started": "running",
    "finished": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
    "stopped": "cancelled",
}


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None

    @field_validator("images")
    @classmethod
    def _images(cls, value: list[str] | None) -> list[str] | None:
        return [check_image(i) for i in value] if value is not None else None


class JobRequest(BaseModel):
    """A job as submitted: Ollama's request fields plus Corral's own (kind, timeout, wait)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model name; `llama3` means `llama3:latest`")
    kind: JobKind | None = Field(None, description="inferred: messages → chat, input → embed, else generate")
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None
    format: Literal["json", ""] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: int | float | str | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None
    input: str | list[str] | None = None
    truncate: bool | None = None
    dimensions: int | None = Field(None, ge=1, le=65536)
    timeout: float | None = Field(None, gt=0, le=86400, description="seconds this job may run")
    queue_timeout: float | None = Field(
        None, gt=0, le=30 * 86400, description="fail the job if it has not started within this many seconds"
    )
    wait: bool = Field(False, description="queue even when no live worker has the model yet")
    stream: bool = Field(False, description="answer with the job's event stream instead of 202 + id")
    priority: Priority = Field(
        "normal", description="high jobs of a model start before normal, normal before low"
    )
    submitter: str | None = Field(
        None,
        validation_alias=AliasChoices("submitter", "user"),
        pattern=SUBMITTER_PATTERN,
        description="who the job is for, for fair share (also `user`, or the X-Corral-User header)",
    )

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        try:
            return normalise_model(value)
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None

    @field_validator("images")
    @classmethod
    def _images(cls, value: list[str] | None) -> list[str] | None:
        return [check_image(i) for i in value] if value is not None else None

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_options(value)

    @model_validator(mode="after")
    def _kind(self) -> JobRequest:
        if self.kind is None:
            if self.messages is not None:
                self.kind = "chat"
            elif self.input is not None:
                self.kind = "embed"
            else:
                self.kind = "generate"
        if self.kind == "chat" and self.messages is None:
            raise ValueError("a chat job needs messages")
        if self.kind == "embed" and self.input is None:
            if self.prompt is None:
                raise ValueError("an embed job needs input")
            self.input = self.prompt
            self.prompt = None
        return self

    def text_bytes(self) -> int:
        """Bytes of prompt-like text: what CORRAL_MAX_PROMPT_BYTES limits."""
        parts: list[str] = [p for p in (self.prompt, self.system, self.suffix) if p]
        parts += [m.content for m in self.messages or ()]
        if isinstance(self.input, str):
            parts.append(self.input)
        elif self.input:
            parts += self.input
        # surrogatepass: a lone surrogate (which the API refuses) is measured, not a UnicodeEncodeError
        return sum(len(p.encode("utf-8", "surrogatepass")) for p in parts)

    def check_limits(self, max_prompt_bytes: int) -> None:
        size = self.text_bytes()
        if size > max_prompt_bytes:
            raise PayloadTooLarge(
                f"prompt is {size} bytes, over the limit of {max_prompt_bytes}",
                size=size,
                limit=max_prompt_bytes,
            )

    def ollama_body(self) -> dict[str, Any]:
        """The body the worker posts to Ollama (streaming for generate and chat)."""
        body = self.model_dump(
            exclude_none=True,
            exclude={"kind", "timeout", "queue_timeout", "wait", "stream", "priority", "submitter"},
        )
        if self.kind in ("generate", "chat"):
            body["stream"] = True
        return body


class JobView(BaseModel):
    """What ``GET /jobs/{id}`` answers."""

    id: str
    model: str
    kind: JobKind
    status: JobStatus
    attempt: int
    worker: str | None = None
    queue: str
    queue_position: int | None = Field(
        None, description="jobs expected to start before this one (priorities and fair share counted)"
    )
    estimated_start_at: str | None = Field(None, description="from the model's recent job start rate")
    priority: Priority = "normal"
    submitter: str | None = None
    created_at: str | None = None
    enqueued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    text: str | None = None
    message: dict[str, Any] | None = None
    embeddings: list[list[float]] | None = None
    final: dict[str, Any] | None = None
    error: str | None = None
    events: int = Field(0, description="events so far; the next has this seq")
    owner: str | None = Field(None, description="id of the API key that created the job")


class Submitted(BaseModel):
    """What ``POST /jobs`` answers (202)."""

    id: str
    status: JobStatus
    model: str
    kind: JobKind
    queue: str
    queue_position: int
    attempt: int = 1


class BatchRequest(BaseModel):
    """What ``POST /jobs/batch`` takes: jobs validated all together, enqueued all or none."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobRequest] = Field(min_length=1, description="job requests as for POST /jobs (no `stream`)")


class BatchSubmitted(BaseModel):
    """What ``POST /jobs/batch`` answers (202): the jobs in the order given."""

    jobs: list[Submitted]
