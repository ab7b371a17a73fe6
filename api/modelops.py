"""Model operations, the API's side: place one (``common.placement``) and write it (``common.modelops``), follow
its events, and turn them into Ollama's pull lines for the drop-in ``/api/pull``.

The API only writes the operation and reads its stream: the workers do the work, so an API restart loses nothing
and a reader that comes back reads the stream from where it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from corral.common import keys, modelops
from corral.common.errors import InvalidRequest, JobNotFound
from corral.common.jsonfast import loads
from corral.common.names import normalise_model
from corral.common.placement import Placement, host_views, place
from corral.common.registry import list_workers
from corral.common.settings import Settings

END_EVENTS = frozenset({"done", "error", "cancelled"})
BLOCK = 1.0  # seconds one XREAD waits (under the client's socket timeout)


class OperationNotFound(JobNotFound):
    code = "operation_not_found"

    def __init__(self, op_id: str) -> None:
        super().__init__(op_id)
        self.message = f"model operation '{op_id}' not found"
        self.args = (self.message,)


def model_name(body: dict[str, Any], field: str = "model") -> str:
    raw = body.get(field) or (body.get("name") if field == "model" else None)
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidRequest(f"{field} is required")
    try:
        return normalise_model(raw)
    except Exception as exc:
        raise InvalidRequest(f"{field}: {exc}") from None


def placement_of(body: dict[str, Any], default_replicas: int | None = None) -> Placement:
    """``hosts`` (a list or comma-separated), ``all`` or ``replicas`` from a request body; at most one."""
    hosts = body.get("hosts") or ()
    if isinstance(hosts, str):
        hosts = [h for h in hosts.split(",") if h.strip()]
    if not isinstance(hosts, list | tuple) or not all(isinstance(h, str) for h in hosts):
        raise InvalidRequest("hosts: a list of worker ids")
    replicas = body.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0):
        raise InvalidRequest("replicas: a whole number, 0 = every host")
    every = body.get("all") is True
    if sum((bool(hosts), every, replicas is not None)) > 1:
        raise InvalidRequest("give one of hosts, all and replicas")
    if not hosts and not every and replicas is None:
        replicas = default_replicas
    return Placement(tuple(h.strip() for h in hosts), every or replicas == 0, replicas)


async def start(client: Any, settings: Settings, kind: str, model: str, placement: Placement,
                params: dict[str, Any], owner: str = "") -> dict[str, Any]:  # fmt: skip
    """Place and write an operation; a pull whose hosts all pull the model already joins that pull."""
    views = host_views(await list_workers(client, settings.heartbeat_ttl))
    base = params.get("source") or params.get("from") if kind in ("copy", "create") else None
    placed_on = normalise_model(str(base)) if base else model  # where the model it starts from is
    targets = place(views, kind, placed_on, placement)
    if kind == "pull":
        running = await modelops.pulling(client, model, targets)
        for op_id in dict.fromkeys(running.values()):
            op = await modelops.get_op(client, op_id)
            if op is not None and op["status"] not in modelops.TERMINAL and set(targets) <= set(op["hosts"]):
                return {**op, "coalesced": True}
        targets = [t for t in targets if t not in running]
        if not targets:
            raise InvalidRequest(
                f"{model} is being pulled on those hosts already: {sorted(set(running.values()))}"
            )
    op_id = await modelops.create_op(client, kind, model, targets, params, placement.describe(), owner)
    op = await modelops.get_op(client, op_id)
    assert op is not None
    return op


CORRAL_FIELDS = ("model", "name", "stream", "wait", "hosts", "all", "replicas")  # not forwarded by a create


async def start_from_body(
    client: Any, settings: Settings, kind: str, body: dict[str, Any], owner: str = ""
) -> dict[str, Any]:
    """Read an operation's model, parameters and placement from a request body (``/models/*`` and Ollama's
    ``/api/*`` alike) and start it."""
    params: dict[str, Any] = {}
    if kind == "copy":
        model = model_name(body, "source")
        params = {"source": model, "destination": model_name(body, "destination")}
    else:
        model = model_name(body)
    if kind == "load" and body.get("keep_alive") is not None:
        params["keep_alive"] = body["keep_alive"]
    if kind == "create":
        params = {k: v for k, v in body.items() if k not in CORRAL_FIELDS}
    default = settings.pull_replicas if kind in ("pull", "create") else (1 if kind == "load" else None)
    return await start(client, settings, kind, model, placement_of(body, default), params, owner)


async def get(client: Any, op_id: str) -> dict[str, Any]:
    op = await modelops.get_op(client, op_id)
    if op is None:
        raise OperationNotFound(op_id)
    return op


async def follow(
    client: Any, op_id: str, after: str = "0-0", idle: float = 5.0
) -> AsyncIterator[dict[str, Any]]:
    """The operation's events from stream id ``after`` until its end, each with its ``id``; ``{"type": "tick"}``
    every ``idle`` seconds without one (a reader writes something to keep its connection)."""
    key = keys.model_op_events_key(op_id)
    quiet = 0.0
    while True:
        reply = await client.xread({key: after}, count=200, block=int(BLOCK * 1000))
        if not reply:
            quiet += BLOCK
            if not await client.exists(keys.model_op_key(op_id)):
                return
            if quiet >= idle:
                quiet = 0.0
                yield {"type": "tick"}
            continue
        quiet = 0.0
        for entry_id, fields in reply[0][1]:
            after = entry_id.decode()
            event = {**loads(fields[b"e"]), "id": after}
            yield event
            if event["type"] in END_EVENTS:
                return


class PullLines:
    """An operation's events as Ollama's pull lines, bytes summed over hosts (one layer per model in Corral's
    view: the digest of the first host that reported one)."""

    def __init__(self) -> None:
        self.hosts: dict[str, tuple[int, int]] = {}
        self.digest = ""

    def line(self, event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event["type"]
        if kind == "queued":
            return {"status": "pulling manifest"}
        if kind == "progress" and event.get("total"):
            self.digest = self.digest or str(event.get("digest") or "")
            self.hosts[str(event["worker"])] = (int(event["total"]), int(event.get("completed") or 0))
            total = sum(t for t, _ in self.hosts.values())
            completed = sum(c for _, c in self.hosts.values())
            return {"status": f"pulling {self.digest[7:19]}", "digest": self.digest, "total": total,
                    "completed": completed}  # fmt: skip
        if kind == "host" and event.get("status") == "succeeded" and event["worker"] in self.hosts:
            total, _ = self.hosts[event["worker"]]
            self.hosts[event["worker"]] = (total, total)
        return None

    @staticmethod
    def ending(event: dict[str, Any]) -> list[dict[str, Any]]:
        if event["type"] == "done":
            return [
                {"status": "verifying sha256 digest"},
                {"status": "writing manifest"},
                {"status": "success"},
            ]
        return [{"error": str(event.get("error") or f"pull {event.get('status') or 'failed'}")}]


async def wait(client: Any, op_id: str) -> dict[str, Any]:
    """Follow to the end: the terminal event."""
    last: dict[str, Any] = {}
    async for event in follow(client, op_id):
        last = event
    return last
