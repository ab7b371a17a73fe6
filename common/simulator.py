"""An Ollama simulator: Ollama's HTTP wire format with a performance model, for demos, tests and benchmarks.

It speaks what a Corral worker and Ollama's own clients use: NDJSON streaming ``/api/generate`` and ``/api/chat``,
``/api/embed``, ``/api/embeddings``, ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/version``, ``/api/pull``,
``/api/delete``, ``GET|HEAD /`` and Ollama's error bodies. The performance model: model load time and memory
(LRU eviction past ``max_loaded`` or ``memory_gb``), ``parallel`` slots per loaded model (more wait at the model,
past ``max_queue`` waiting → 503), first-token delay, tokens/s, keep-alive; ``time_scale`` shrinks every delay.

Replies are deterministic (see ``reply_words``) so a test can check every token. This module imports nothing of
Corral: run it with ``corral simulate`` or ``python -m common.simulator``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

VERSION = "0.12.0"
GIB = 1024**3


@dataclass
class ModelSpec:
    name: str
    size_gb: float = 4.0
    load_time: float = 1.0
    ttft: float = 0.05
    tps: float = 50.0
    embedding: bool = False
    dims: int = 16
    family: str = "llama"

    @property
    def size(self) -> int:
        return int(self.size_gb * GIB)


@dataclass
class SimConfig:
    models: list[ModelSpec] = field(default_factory=list)
    parallel: int = 4
    max_loaded: int = 3
    memory_gb: float = 64.0
    max_queue: int = 512
    keep_alive: float = 300.0
    time_scale: float = 1.0
    min_tokens: int = 0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise(name: str) -> str:
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def reply_words(model: str, prompt: str, min_tokens: int = 0) -> list[str]:
    """The tokens the simulator answers with: an echo of the prompt, padded with numbered filler."""
    words = f"{normalise(model)} heard: {prompt}".split()
    words += [f"tok{i}" for i in range(max(0, min_tokens - len(words)))]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def expected_text(model: str, prompt: str, num_predict: int | None = None, min_tokens: int = 0) -> str:
    words = reply_words(model, prompt, min_tokens)
    if num_predict is not None and 0 <= num_predict < len(words):
        words = words[:num_predict]
    return "".join(words)


def embedding_of(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 + i * 1e-3 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Loaded:
    spec: ModelSpec
    slots: asyncio.Semaphore
    expires_at: float = 0.0
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)


class Simulator:
    """The server state: models on disk, models loaded, counters for tests."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.disk: dict[str, ModelSpec] = {normalise(m.name): m for m in config.models}
        self.loaded: dict[str, Loaded] = {}
        self.waiting = 0
        self.stats = {"requests": 0, "loads": 0, "unloads": 0, "cancelled": 0, "active": 0, "completed": 0}
        self._load_lock = asyncio.Lock()

    def delay(self, seconds: float) -> float:
        return seconds * self.config.time_scale

    async def sleep(self, seconds: float) -> None:
        scaled = self.delay(seconds)
        if scaled > 0:
            await asyncio.sleep(scaled)

    def spec(self, name: str, kind: str = "generate") -> ModelSpec:
        spec = self.disk.get(normalise(name))
        if spec is None:
            if kind == "embed":
                raise ApiError(404, f'model "{name}" not found, try pulling it first')
            raise ApiError(404, f"model '{name}' not found")
        if kind in ("generate", "chat") and spec.embedding:
            raise ApiError(400, f'"{name}" does not support {kind}')
        return spec

    def _expire(self) -> None:
        now = time.monotonic()
        for name, item in list(self.loaded.items()):
            if item.active == 0 and item.expires_at <= now:
                del self.loaded[name]
                self.stats["unloads"] += 1

    def _make_room(self, spec: ModelSpec) -> None:
        def used() -> int:
            return sum(x.spec.size for x in self.loaded.values())

        while self.loaded and (
            len(self.loaded) >= self.config.max_loaded or used() + spec.size > self.config.memory_gb * GIB
        ):
            idle = [(x.expires_at, n) for n, x in self.loaded.items() if x.active == 0]
            if not idle:
                return  # everything busy: load anyway (Ollama would wait; close enough)
            del self.loaded[min(idle)[1]]
            self.stats["unloads"] += 1

    async def acquire(self, spec: ModelSpec, keep_alive: float) -> Loaded:
        """Load the model if needed, then take one of its parallel slots."""
        name = normalise(spec.name)
        if self.waiting >= self.config.max_queue:
            raise ApiError(503, "server busy, please try again.  maximum pending requests exceeded")
        self.waiting += 1
        try:
            async with self._load_lock:
                self._expire()
                item = self.loaded.get(name)
                if item is None:
                    self._make_room(spec)
                    await self.sleep(spec.load_time)
                    item = Loaded(spec, asyncio.Semaphore(self.config.parallel))
                    self.loaded[name] = item
                    self.stats["loads"] += 1
                item.active += 1
            await item.slots.acquire()
        finally:
            self.waiting -= 1
        item.expires_at = math.inf
        return item

    def release(self, item: Loaded, keep_alive: float) -> None:
        item.slots.release()
        item.active -= 1
        item.last_used = time.monotonic()
        if keep_alive < 0:
            item.expires_at = math.inf
        elif item.active == 0:
            item.expires_at = time.monotonic() + self.delay(keep_alive)


def parse_keep_alive(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        raise ApiError(400, f"time: invalid duration {text!r}") from None


async def read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise ApiError(400, "json: cannot unmarshal into Go value of type api.Request")
    name = body.get("model") or body.get("name")
    if not name:
        raise ApiError(400, "model is required")
    return body


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
        await self.sim.sleep(self.spec.ttft)
        if self.tool_call and self.chat:
            chunk = self.chunk("")
            chunk["message"]["tool_calls"] = [self.tool_call]
            yield chunk
        else:
            per_token = 1.0 / self.spec.tps if self.spec.tps > 0 else 0.0
            for i, word in enumerate(self.words):
                if i:
                    await self.sim.sleep(per_token)
                yield self.chunk(word)
        yield self.final()


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(config: SimConfig) -> Starlette:  # noqa: C901 - one closure per Ollama route
    sim = Simulator(config)

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(request: Request) -> Response:
        models = [
            {
                "name": spec.name if ":" in spec.name else spec.name + ":latest",
                "model": spec.name if ":" in spec.name else spec.name + ":latest",
                "modified_at": "2026-01-01T00:00:00Z",
                "size": spec.size,
                "digest": digest(spec),
                "details": details(spec),
            }
            for spec in sim.disk.values()
        ]
        return JSONResponse({"models": models})

    async def ps(request: Request) -> Response:
        sim._expire()
        out = []
        for name, item in sim.loaded.items():
            remaining = item.expires_at - time.monotonic()
            expires = datetime.now(UTC) + timedelta(seconds=min(remaining, 10 * 365 * 86400))
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": item.spec.size,
                    "digest": digest(item.spec),
                    "details": details(item.spec),
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "size_vram": item.spec.size,
                    "context_length": 4096,
                }
            )
        return JSONResponse({"models": out})

    async def show(request: Request) -> Response:
        body = await read_body(request)
        spec = sim.spec(body.get("model") or body["name"], kind="show")
        return JSONResponse(
            {
                "license": "simulated",
                "modelfile": f"FROM {spec.name}",
                "parameters": "num_ctx 4096",
                "template": "{{ .Prompt }}",
                "system": "",
                "details": details(spec),
                "model_info": {"general.architecture": spec.family, f"{spec.family}.context_length": 4096},
                "capabilities": ["embedding"] if spec.embedding else ["completion", "tools"],
                "modified_at": "2026-01-01T00:00:00Z",
            }
        )

    async def generate(request: Request, chat: bool = False) -> Response:
        body = await read_body(request)
        spec = sim.spec(body["model"], kind="chat" if chat else "generate")
        keep_alive = parse_keep_alive(body.get("keep_alive"), config.keep_alive)
        gen = Generation(sim, spec, body, chat)
        empty = not (body.get("messages") if chat else body.get("prompt"))
        if empty:
            return await load_only(spec, gen, keep_alive)
        item = await sim.acquire(spec, keep_alive)
        gen.load_duration = time.monotonic() - gen.started
        sim.stats["requests"] += 1
        if body.get("stream") is False:
            return await collect(gen, item, keep_alive)
        return StreamingResponse(run_stream(gen, item, keep_alive), media_type="application/x-ndjson")

    async def load_only(spec: ModelSpec, gen: Generation, keep_alive: float) -> Response:
        name = normalise(spec.name)
        if keep_alive == 0:
            if sim.loaded.pop(name, None) is not None:
                sim.stats["unloads"] += 1
            gen.done_reason = "unload"
        else:
            item = await sim.acquire(spec, keep_alive)
            sim.release(item, keep_alive)
            gen.done_reason = "load"
        gen.words = []
        final = gen.final()
        for k in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                  "eval_duration", "context"):  # fmt: skip
            final.pop(k, None)
        return JSONResponse(final)

    async def collect(gen: Generation, item: Loaded, keep_alive: float) -> Response:
        sim.stats["active"] += 1
        parts: list[str] = []
        tool_calls = None
        try:
            async for chunk in gen.stream():
                if chunk["done"]:
                    if gen.chat:
                        chunk["message"]["content"] = "".join(parts)
                        if tool_calls:
                            chunk["message"]["tool_calls"] = tool_calls
                    else:
                        chunk["response"] = "".join(parts)
                    sim.stats["completed"] += 1
                    return JSONResponse(chunk)
                if gen.chat:
                    parts.append(chunk["message"]["content"])
                    tool_calls = chunk["message"].get("tool_calls") or tool_calls
                else:
                    parts.append(chunk["response"])
        finally:
            sim.stats["active"] -= 1
            sim.release(item, keep_alive)
        raise AssertionError("unreachable")

    async def run_stream(gen: Generation, item: Loaded, keep_alive: float) -> AsyncIterator[bytes]:
        sim.stats["active"] += 1
        finished = False
        try:
            async for chunk in gen.stream():
                yield (json.dumps(chunk) + "\n").encode()
            finished = True
            sim.stats["completed"] += 1
        finally:
            if not finished:
                sim.stats["cancelled"] += 1
            sim.stats["active"] -= 1
            sim.release(item, keep_alive)

    async def chat(request: Request) -> Response:
        return await generate(request, chat=True)

    async def embed(request: Request) -> Response:
        body = await read_body(request)
        spec = sim.spec(body["model"], kind="embed")
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        keep_alive = parse_keep_alive(body.get("keep_alive"), config.keep_alive)
        started = time.monotonic()
        item = await sim.acquire(spec, keep_alive)
        try:
            await sim.sleep(spec.ttft)
        finally:
            sim.release(item, keep_alive)
        dims = int(body.get("dimensions") or spec.dims)
        vectors = [embedding_of(text, spec.dims)[:dims] for text in inputs]
        vectors = [[x / (math.sqrt(sum(y * y for y in v)) or 1) for x in v] for v in vectors]
        return JSONResponse(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": ns(time.monotonic() - started),
                "load_duration": 0,
                "prompt_eval_count": sum(len(t.split()) for t in inputs),
            }
        )

    async def embeddings(request: Request) -> Response:
        body = await read_body(request)
        spec = sim.spec(body["model"], kind="embed")
        return JSONResponse({"embedding": embedding_of(body.get("prompt") or "", spec.dims)})

    async def pull(request: Request) -> Response:
        body = await read_body(request)
        name = body.get("model") or body["name"]
        sim.disk[normalise(name)] = ModelSpec(name=normalise(name), embedding="embed" in name)
        return JSONResponse({"status": "success"})

    async def delete(request: Request) -> Response:
        body = await read_body(request)
        name = normalise(body.get("model") or body["name"])
        if sim.disk.pop(name, None) is None:
            return error(404, f"model '{name}' not found")
        sim.loaded.pop(name, None)
        return Response(status_code=200)

    async def stats(request: Request) -> Response:
        return JSONResponse({**sim.stats, "loaded": sorted(sim.loaded), "disk": sorted(sim.disk)})

    def guarded(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except ApiError as exc:
                return error(exc.status, exc.message)

        return run

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", guarded(version), methods=["GET"]),
        Route("/api/tags", guarded(tags), methods=["GET"]),
        Route("/api/ps", guarded(ps), methods=["GET"]),
        Route("/api/show", guarded(show), methods=["POST"]),
        Route("/api/generate", guarded(generate), methods=["POST"]),
        Route("/api/chat", guarded(chat), methods=["POST"]),
        Route("/api/embed", guarded(embed), methods=["POST"]),
        Route("/api/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/api/pull", guarded(pull), methods=["POST"]),
        Route("/api/delete", guarded(delete), methods=["DELETE"]),
        Route("/_sim/stats", stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


DEMO_MODELS = "llama3:latest,qwen2.5:0.5b,nomic-embed-text:latest"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="corral simulate", description="Run the bundled Ollama simulator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument(
        "--models", default=DEMO_MODELS, help="comma-separated model names ('embed' in a name: embedding)"
    )
    p.add_argument("--ttft", type=float, default=0.05, help="seconds to first token")
    p.add_argument("--tps", type=float, default=50.0, help="tokens per second (0 = instant)")
    p.add_argument("--load-time", type=float, default=1.0, help="seconds to load a model")
    p.add_argument("--size-gb", type=float, default=4.0, help="memory of each model")
    p.add_argument("--parallel", type=int, default=4, help="like OLLAMA_NUM_PARALLEL")
    p.add_argument("--max-loaded", type=int, default=3, help="like OLLAMA_MAX_LOADED_MODELS")
    p.add_argument("--memory-gb", type=float, default=64.0, help="GPU memory of this host")
    p.add_argument("--max-queue", type=int, default=512, help="like OLLAMA_MAX_QUEUE")
    p.add_argument("--keep-alive", type=float, default=300.0, help="seconds a model stays loaded")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiplies every delay (0 = instant)")
    p.add_argument("--min-tokens", type=int, default=0, help="pad every reply to this many tokens")
    p.add_argument("--flavor", choices=("ollama", "openai"), default="ollama",
                   help="which API to speak: Ollama's or OpenAI's (/v1, like vLLM or llama.cpp's server)")  # fmt: skip
    p.add_argument("--token", default="", help="answer 401 unless 'Authorization: Bearer <token>'")
    p.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    specs = [
        ModelSpec(
            name=normalise(name),
            size_gb=args.size_gb,
            load_time=args.load_time,
            ttft=args.ttft,
            tps=args.tps,
            embedding="embed" in name,
        )
        for name in args.models.split(",")
        if name.strip()
    ]
    return SimConfig(
        models=specs,
        parallel=args.parallel,
        max_loaded=args.max_loaded,
        memory_gb=args.memory_gb,
        max_queue=args.max_queue,
        keep_alive=args.keep_alive,
        time_scale=args.time_scale,
        min_tokens=args.min_tokens,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    if args.flavor != "ollama" or args.token or args.tls_cert:
        raise SystemExit("--flavor, --token and --tls-*: run `corral simulate` (common.simulator_openai)")
    app = build_app(config_from_args(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
