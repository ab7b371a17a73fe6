"""The simulator's model management, as Ollama answers it: ``/api/pull`` (a download of a size at a rate, streamed
as Ollama's NDJSON progress), ``/api/delete``, ``/api/copy``, ``/api/create`` and a disk of a capacity.

A pull cut short (the client went away) keeps what it downloaded, as Ollama keeps partial blobs: the next pull of
the model resumes from there. Unknown models and a full disk fail with Ollama's messages.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .model import GIB, ApiError, ModelSpec, Simulator, normalise

PULL_TICK = 0.1  # seconds between two progress lines of a download (before the time scale)
UNKNOWN = "pull model manifest: file does not exist"


def layer_digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(("layer:" + normalise(name)).encode()).hexdigest()


def disk_used(sim: Simulator) -> int:
    return sum(spec.size for spec in sim.disk.values())


def pull_size(sim: Simulator, name: str) -> int:
    """Bytes to download for ``name``; ApiError(500, UNKNOWN) when the registry has no such model."""
    registry = sim.config.registry
    if registry is None:
        return int(sim.config.pull_size_gb * GIB)
    size = registry.get(normalise(name))
    if size is None:
        raise ApiError(500, UNKNOWN)
    return int(size * GIB)


def check_disk(sim: Simulator, name: str, size: int) -> None:
    free = int(sim.config.disk_gb * GIB) - disk_used(sim)
    have = sim.disk.get(normalise(name))
    if size - (have.size if have else 0) > free:
        raise ApiError(
            500, f"write /models/blobs/{layer_digest(name).replace(':', '-')}: no space left on device"
        )


class Downloads:
    """Pulls, deletes, copies and creates on one ``Simulator``'s disk."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.partial: dict[str, int] = {}  # model -> bytes downloaded by a pull cut short

    async def progress(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """Ollama's pull lines, paced by the download rate; the model is on disk when ``success`` is sent."""
        model = normalise(name)
        digest = layer_digest(model)
        yield {"status": "pulling manifest"}
        size = pull_size(self.sim, model)
        check_disk(self.sim, model, size)
        rate = self.sim.config.pull_rate_mbps * 1024**2
        have = self.sim.disk.get(model)
        done = size if have is not None and have.size == size else min(self.partial.get(model, 0), size)
        status = f"pulling {digest[7:19]}"
        yield {"status": status, "digest": digest, "total": size, "completed": done}
        while done < size:
            step = int(rate * PULL_TICK) if rate > 0 else size
            await self.sim.sleep(PULL_TICK if rate > 0 else 0)
            done = min(size, done + step)
            self.partial[model] = done
            yield {"status": status, "digest": digest, "total": size, "completed": done}
        for line in ("verifying sha256 digest", "writing manifest"):
            yield {"status": line}
        self.partial.pop(model, None)
        self.sim.disk[model] = self.spec_for(model, size)
        self.sim.stats["pulls"] = self.sim.stats.get("pulls", 0) + 1
        yield {"status": "removing any unused layers"}
        yield {"status": "success"}

    def spec_for(self, model: str, size: int) -> ModelSpec:
        base = self.sim.config.models[0] if self.sim.config.models else ModelSpec(name=model)
        return replace(base, name=model, size_gb=size / GIB, embedding="embed" in model)

    async def pull(self, request: Request) -> Response:
        body = await read_json(request)
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            raise ApiError(400, "model is required")
        lines = self.progress(name)
        if body.get("stream", True) is False:
            last: dict[str, Any] = {}
            async for item in lines:
                last = item
            return JSONResponse(last)

        async def ndjson() -> AsyncIterator[bytes]:
            try:
                async for item in lines:
                    yield (json.dumps(item) + "\n").encode()
            except ApiError as exc:  # after the stream began, Ollama sends the error as its last line
                yield (json.dumps({"error": exc.message}) + "\n").encode()

        return StreamingResponse(ndjson(), media_type="application/x-ndjson")

    async def delete(self, request: Request) -> Response:
        body = await read_json(request)
        name = normalise(str(body.get("model") or body.get("name") or ""))
        if self.sim.disk.pop(name, None) is None:
            raise ApiError(404, f"model '{name}' not found")
        self.sim.loaded.pop(name, None)
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        body = await read_json(request)
        source, destination = str(body.get("source") or ""), str(body.get("destination") or "")
        if not source or not destination:
            raise ApiError(400, "source and destination are required")
        spec = self.sim.disk.get(normalise(source))
        if spec is None:
            raise ApiError(404, f"model '{source}' not found")
        self.sim.disk[normalise(destination)] = replace(spec, name=normalise(destination))
        return Response(status_code=200)

    async def create(self, request: Request) -> Response:
        """A model made ``from`` one on disk (its layers reused): Ollama's status lines, then ``success``."""
        body = await read_json(request)
        name = str(body.get("model") or body.get("name") or "")
        source = str(body.get("from") or "")
        if not name:
            raise ApiError(400, "model is required")
        spec = self.sim.disk.get(normalise(source)) if source else None
        if spec is None:
            raise ApiError(404 if source else 400, f"model '{source}' not found" if source else "neither 'from' "
                           "or 'files' was specified")  # fmt: skip
        self.sim.disk[normalise(name)] = replace(spec, name=normalise(name))
        lines = [{"status": "using existing layers"}, {"status": "writing manifest"}, {"status": "success"}]
        if body.get("stream", True) is False:
            return JSONResponse(lines[-1])
        text = "".join(json.dumps(x) + "\n" for x in lines)
        return Response(text, media_type="application/x-ndjson")


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise ApiError(400, "json: cannot unmarshal into Go value of type api.Request")
    return body


def disk_stats(sim: Simulator) -> dict[str, Any]:
    """For /sim/stats: the disk's capacity and use."""
    return {"disk_total": int(sim.config.disk_gb * GIB), "disk_used": disk_used(sim), "at": time.time()}
