"""A light fleet for ``bench.scale``: many real workers in one process.

Each is ``corral.worker.lifecycle.Worker`` as ``corral worker`` runs it (its own Redis connections, pop loop and
push dispatch, control listener, heartbeat, janitor thread), with an instant fake engine in place of Ollama: it
answers every generation with one final chunk at once (``--hang``: never, so the jobs stay in flight). So every
worker speaks to Redis exactly as a real one does, and the engine costs nothing.

    python -m bench.scale_fleet --redis URL --first 0 --count 50 --models 50 --per-worker 5 [--hang]

Worker ``i`` is ``w<i>`` and holds ``--per-worker`` of the ``--models`` models (``m00``..), all loaded. SIGTERM
drains every worker (as ``corral worker`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from corral.common.settings import Settings
from corral.worker import lifecycle


def model_name(i: int) -> str:
    return f"m{i:02d}"


class FakeEngine:
    """The ``Backend`` protocol with no engine behind it."""

    kind = "ollama"
    url = "http://127.0.0.1:9"

    def __init__(self, models: list[str], hang: bool) -> None:
        # as Ollama's /api/tags describes a model (the heartbeat carries these)
        self.models = [
            {"name": f"{m}:latest", "model": f"{m}:latest", "modified_at": "2026-01-01T00:00:00.000000000Z",
             "size": 4_920_753_328, "digest": "a" * 64,
             "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                         "parameter_size": "8.0B", "quantization_level": "Q4_K_M"}}
            for m in models
        ]  # fmt: skip
        self.hang = hang

    async def list_models(self) -> list[dict[str, Any]]:
        return self.models

    async def loaded_models(self) -> list[dict[str, Any]]:
        return self.models

    def send_now(self, kind: str, request: dict[str, Any]) -> None:
        return None

    @contextlib.asynccontextmanager
    async def stream(self, kind: str, request: dict[str, Any], early: Any = None) -> AsyncIterator[Any]:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            if self.hang:
                await asyncio.Event().wait()
            yield {"model": request.get("model"), "response": "ok", "done": True, "eval_count": 1}

        yield chunks()

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"embeddings": [[0.0]]}

    async def show(self, model: str) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


def fleet_models(i: int, n_models: int, per_worker: int) -> list[str]:
    """Worker i's models: a window of the model list, so each model has about as many holders as the next."""
    return sorted({model_name((i * per_worker + j) % n_models) for j in range(per_worker)})


async def run(args: argparse.Namespace) -> None:
    engines: dict[str, FakeEngine] = {}
    lifecycle.make_backend = lambda settings: engines[settings.worker_id]  # type: ignore[assignment,return-value]
    workers = []
    for i in range(args.first, args.first + args.count):
        wid = f"{args.prefix}{i:03d}"
        models = args.only.split(",") if args.only else fleet_models(i, args.models, args.per_worker)
        engines[wid] = FakeEngine(models, args.hang)
        settings = Settings(
            redis_url=args.redis, worker_id=wid, worker_slots=args.slots, max_loaded_models=len(models),
            ollama_url=FakeEngine.url,
        )  # fmt: skip
        workers.append(lifecycle.Worker(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [w.drain() for w in workers if not w.draining.is_set()])
    await asyncio.gather(*(w.run() for w in workers))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_fleet")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--per-worker", type=int, default=5)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--prefix", default="w")
    parser.add_argument("--only", default="", help="these models (comma-separated) instead of a window")
    parser.add_argument("--hang", action="store_true", help="generations never end (the jobs stay in flight)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
