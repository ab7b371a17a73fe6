"""The simulator's performance model: a host's memory, loaded models (LRU eviction when full), parallel slots
per loaded model, load time, first-token delay, tokens/s, a host speed factor and a time scale.

``Simulator(config)`` holds the state; ``acquire`` / ``release`` bracket one request's use of a model. Front ends
(the Ollama wire format in ``app``, others) build on it. Imports nothing of Corral.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

VERSION = "0.12.0"
GIB = 1024**3


HISTORY_KEPT = 1000  # loads and evictions kept for /sim/stats


@dataclass
class ModelSpec:
    """A model on disk: memory when loaded (GB), seconds to load, seconds to first token, tokens/s (at speed 1)."""

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
    speed: float = 1.0  # this host's speed: tokens/s times it, load and first-token delays divided by it
    time_scale: float = 1.0
    min_tokens: int = 0
    disk_gb: float = 1000.0  # the disk models are pulled to
    pull_rate_mbps: float = 1000.0  # download rate of a pull, MiB/s (0 = instant)
    pull_size_gb: float = 2.0  # size of a pulled model when no registry is given
    registry: dict[str, float] | None = None  # model -> size (GB) that a pull finds; None: any name


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
        self._idle = asyncio.Event()  # set when a loaded model's last request ends
        # the latest loads and evictions, oldest first: (monotonic seconds, "load" | "evict", model)
        self.history: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=HISTORY_KEPT)

    def delay(self, seconds: float) -> float:
        return seconds * self.config.time_scale

    def load_delay(self, spec: ModelSpec) -> float:
        """Unscaled seconds to load ``spec`` on this host."""
        return spec.load_time / self.config.speed

    def first_token_delay(self, spec: ModelSpec) -> float:
        return spec.ttft / self.config.speed

    def token_interval(self, spec: ModelSpec) -> float:
        """Unscaled seconds between two tokens (0 when tokens/s is 0: instant)."""
        return 1.0 / (spec.tps * self.config.speed) if spec.tps > 0 else 0.0

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

    def _fits(self, spec: ModelSpec) -> bool:
        """Evict idle models, least recently used first, until ``spec`` fits; False when only busy ones are left."""
        while self.loaded and (
            len(self.loaded) >= self.config.max_loaded
            or sum(x.spec.size for x in self.loaded.values()) + spec.size > self.config.memory_gb * GIB
        ):
            idle = [(x.last_used, n) for n, x in self.loaded.items() if x.active == 0]
            if not idle:
                return False
            del self.loaded[min(idle)[1]]
            self.stats["unloads"] += 1
            self.history.append((time.monotonic(), "evict", min(idle)[1]))
        return True

    async def _ensure_loaded(self, spec: ModelSpec, name: str) -> Loaded:
        """Under the scheduler lock: the loaded model, or load it once memory can be freed (like Ollama, a
        request that must wait for a busy model to go idle holds up the requests behind it)."""
        self._expire()
        item = self.loaded.get(name)
        if item is not None:
            return item
        while not self._fits(spec):
            self._idle.clear()
            await self._idle.wait()
            self._expire()
        await self.sleep(self.load_delay(spec))
        item = Loaded(spec, asyncio.Semaphore(self.config.parallel), expires_at=math.inf)
        self.loaded[name] = item
        self.stats["loads"] += 1
        self.history.append((time.monotonic(), "load", name))
        return item

    async def acquire(self, spec: ModelSpec, keep_alive: float) -> Loaded:
        """Load the model if needed (one request at a time through the scheduler), then take one of its slots."""
        name = normalise(spec.name)
        if self.waiting >= self.config.max_queue:
            raise ApiError(503, "server busy, please try again.  maximum pending requests exceeded")
        self.waiting += 1
        try:
            async with self._load_lock:
                item = await self._ensure_loaded(spec, name)
                item.active += 1
            await item.slots.acquire()
        finally:
            self.waiting -= 1
        item.expires_at = math.inf
        return item

    @contextlib.contextmanager
    def serving(self, item: Loaded, keep_alive: float) -> Iterator[None]:
        """A streamed answer: active while it runs, completed when it ends, cancelled when it is cut short
        (the client went away); its slot is released either way."""
        self.stats["active"] += 1
        finished = False
        try:
            yield
            finished = True
            self.stats["completed"] += 1
        finally:
            if not finished:
                self.stats["cancelled"] += 1
            self.stats["active"] -= 1
            self.release(item, keep_alive)

    def release(self, item: Loaded, keep_alive: float) -> None:
        item.slots.release()
        item.active -= 1
        item.last_used = time.monotonic()
        if item.active == 0:
            self._idle.set()
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
