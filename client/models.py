"""Model management over the API (``Client.models``): pull, delete, copy, create and load with placement, the
fleet's models, and an operation's state and live events (docs/models.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from corral.common.errors import CorralError


def placement(hosts: list[str] | str | None, every: bool, replicas: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if hosts:
        body["hosts"] = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    if every:
        body["all"] = True
    if replicas is not None:
        body["replicas"] = replicas
    return body


class ModelOps:
    """``Client.models``: each write answers the operation (``id``, ``status``, ``hosts``: each host's state);
    ``wait=True`` answers at its end, ``events(id)`` follows it live."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body, timeout=httpx.Timeout(30.0, read=None))
        if response.status_code >= 400:
            raise CorralError(str(response.json().get("error", response.text)), status=response.status_code)
        return dict(response.json())

    def pull(self, model: str, *, hosts: list[str] | str | None = None, every: bool = False,
             replicas: int | None = None, wait: bool = False) -> dict[str, Any]:  # fmt: skip
        """Pull ``model`` onto ``hosts``, ``every`` host or ``replicas`` of them (default: the API's
        ``CORRAL_PULL_REPLICAS``)."""
        return self._post("/models/pull", {"model": model, "wait": wait, **placement(hosts, every, replicas)})

    def delete(
        self, model: str, *, hosts: list[str] | str | None = None, wait: bool = True
    ) -> dict[str, Any]:
        """Delete ``model`` from every host that has it (or ``hosts``); its running jobs finish first."""
        return self._post("/models/delete", {"model": model, "wait": wait, **placement(hosts, False, None)})

    def copy(self, source: str, destination: str, *, hosts: list[str] | str | None = None,
             wait: bool = True) -> dict[str, Any]:  # fmt: skip
        body = {"source": source, "destination": destination, "wait": wait, **placement(hosts, False, None)}
        return self._post("/models/copy", body)

    def load(self, model: str, *, replicas: int | None = None, hosts: list[str] | str | None = None,
             keep_alive: str | int | None = None, wait: bool = True) -> dict[str, Any]:  # fmt: skip
        """Warm ``model`` on ``replicas`` hosts that have it (Ollama's empty generate with ``keep_alive``)."""
        body = {"model": model, "wait": wait, **placement(hosts, False, replicas)}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return self._post("/models/load", body)

    def create(self, model: str, wait: bool = True, **request: Any) -> dict[str, Any]:
        """Ollama's create (``from``, ``system``, …: forwarded as-is), placed like a pull."""
        return self._post("/models/create", {"model": model, "wait": wait, **request})

    def list(self) -> list[dict[str, Any]]:
        """Each model of the live fleet with ``hosts``: the workers that have it, loaded or not, its size."""
        return list(self.http.get("/models").raise_for_status().json()["models"])

    def operation(self, op_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/models/ops/{op_id}").raise_for_status().json())

    def cancel(self, op_id: str) -> dict[str, Any]:
        return dict(self.http.delete(f"/models/ops/{op_id}").raise_for_status().json())

    def events(self, op_id: str, after: str = "0-0") -> Iterator[dict[str, Any]]:
        """The operation's events until its end (``progress`` per host: status, total, completed, percent,
        speed, eta; ``host`` when a host ends; then ``done``, ``error`` or ``cancelled``)."""
        timeout = httpx.Timeout(30.0, read=None)
        with self.http.stream(
            "GET", f"/models/ops/{op_id}/events", params={"after": after}, timeout=timeout
        ) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line.strip():
                    event = json.loads(line)
                    if event.get("type") != "tick":
                        yield event
