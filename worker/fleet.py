"""``corral fleet``: one process serving every engine registered by URL (``corral hosts add``), a ``Worker`` each.

Each host gets a whole worker of its own (worker id = the host's name, its own heartbeat, slots, models, pop loop,
control channel and in-flight list), exactly as if it ran beside its engine; the workers share this process's
event loop and its Redis clients, and one janitor. A dead engine is one unhealthy worker; the others go on.

The fleet follows the registered hosts (``common.hosts``): on each ``corral:hosts:changed`` message, and every
heartbeat interval, it starts a worker for each host it does not serve yet and drains the worker of a host that
was removed or changed (a changed host's worker starts again once drained). A host is served by one fleet
process: the one that holds its lease (``corral:hosts:lease:<name>``, the fleet's id, renewed at each pass). The
fleet's id is ``CORRAL_WORKER_ID`` (the machine's name by default), so a fleet restarted on the same machine takes
its hosts back at once and re-queues what its previous life left in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

from corral.common import jsonfast, keys
from corral.common.connections import TRANSIENT, async_redis, sync_redis
from corral.common.fastredis import fast_redis
from corral.common.hosts import HostSpec, load_hosts, register_hosts
from corral.common.janitor import Janitor
from corral.common.jobs import Limits
from corral.common.pubsub import PubSubConnection, resubscribing
from corral.common.settings import Settings, redacted_url
from corral.common.store import JobStore
from corral.common.tasks import cancel_and_wait

from .check import check_backend
from .lifecycle import Shared, Worker

log = logging.getLogger("corral.fleet")
TEST_ANSWER_TTL = 60  # seconds the answer of a connection test waits for its reader


@dataclass
class Served:
    """A host this process serves: its spec, its worker and the task running it."""

    spec: HostSpec
    worker: Worker
    task: asyncio.Task[None]


class Fleet:
    """Serves the registered hosts until ``drain``; ``hosts`` (``--host``, the config file) are registered at
    start."""

    def __init__(self, settings: Settings, hosts: list[HostSpec] | None = None) -> None:
        self.settings = settings
        self.id = settings.worker_id
        self.hosts = hosts or []
        self.redis = async_redis(settings.redis_url, name=f"corral-fleet:{self.id}", max_connections=256)
        self.shared = Shared(self.redis, fast_redis(settings.redis_url))
        self.served: dict[str, Served] = {}
        self.draining = asyncio.Event()
        self.changed = asyncio.Event()
        self.lease_ms = int(max(settings.heartbeat_ttl, 3 * settings.heartbeat_interval) * 1000)
        self.tests: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Register the given hosts, then serve the registered ones until drained; drain every worker at the end."""
        if not await self.wait_for_redis():
            return await self.close()
        await register_hosts(self.redis, self.hosts)
        sync_client = sync_redis(self.settings.redis_url, name=f"corral-janitor:{self.id}")
        janitor = Janitor(JobStore(sync_client, Limits.from_settings(self.settings)), self.settings.heartbeat_ttl,
                          self.settings.janitor_interval)  # fmt: skip
        _thread, janitor_stop = janitor.start()
        listener = asyncio.create_task(self.listen())
        log.info(
            "fleet %s up: serving the hosts registered in %s", self.id, redacted_url(self.settings.redis_url)
        )
        try:
            while not self.draining.is_set():
                self.changed.clear()  # (before the pass: a change published during it makes another)
                with contextlib.suppress(*TRANSIENT):
                    await self.reconcile()
                waits = [asyncio.ensure_future(e.wait()) for e in (self.changed, self.draining)]
                await asyncio.wait(
                    waits, timeout=self.settings.heartbeat_interval, return_when="FIRST_COMPLETED"
                )
                for waiting in waits:
                    waiting.cancel()
        finally:
            for served in self.served.values():
                served.worker.stop_taking()
            await asyncio.gather(*(s.task for s in self.served.values()), return_exceptions=True)
            with contextlib.suppress(*TRANSIENT):
                await self.release(list(self.served))
            await cancel_and_wait([listener])
            await asyncio.gather(*self.tests, return_exceptions=True)
            janitor_stop.set()
            sync_client.close()
            await self.close()
            log.info("fleet %s stopped", self.id)

    async def close(self) -> None:
        await self.redis.aclose()
        if self.shared.fast is not None:
            await self.shared.fast.aclose()

    async def wait_for_redis(self) -> bool:
        delay = 0.1
        while not self.draining.is_set():
            try:
                await self.redis.ping()
                return True
            except TRANSIENT as exc:
                log.warning("redis at %s not reachable: %s", redacted_url(self.settings.redis_url), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return False

    # -- following the registered hosts ------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """One pass: drain what is no longer ours (removed, changed, lease lost), start what is ours and not run."""
        wanted = await load_hosts(self.redis)
        ended = [name for name, served in self.served.items() if served.task.done()]
        for name in ended:
            del self.served[name]  # (drained, or its worker stopped: started again below if still wanted)
        await self.release([name for name in ended if name not in wanted])
        # a draining worker keeps its lease: no other fleet starts a worker of the same id meanwhile
        ours = await self.leases(sorted(set(wanted) | set(self.served)))
        for name, served in self.served.items():
            if name not in ours or wanted.get(name) != served.spec:
                if not served.worker.draining.is_set():
                    log.info("host %s removed or changed: draining its worker", name)
                served.worker.stop_taking()
        for name in ours:
            if name in wanted and name not in self.served:
                self.start(wanted[name])

    def start(self, spec: HostSpec) -> None:
        worker = Worker(spec.worker_settings(self.settings), self.shared)
        task = asyncio.create_task(self.serve(worker))
        self.served[spec.name] = Served(spec, worker, task)
        log.info(
            "host %s: serving %s (%s, %d slots)", spec.name, redacted_url(spec.url), spec.kind, spec.slots
        )

    async def serve(self, worker: Worker) -> None:
        """Run one host's worker; a failure of its own (not Redis) is logged and ends only that worker."""
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the worker of host %s failed; started again at the next pass", worker.id)

    async def leases(self, names: list[str]) -> list[str]:
        """Take or renew the lease of each host; the names this process now serves (one fleet serves a host)."""
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.set(keys.host_lease_key(name), self.id, nx=True, px=self.lease_ms)
            pipe.get(keys.host_lease_key(name))
        replies = await pipe.execute()
        ours = [name for name, holder in zip(names, replies[1::2], strict=True) if holder == self.id.encode()]
        pipe = self.redis.pipeline(transaction=False)
        for name in ours:
            pipe.pexpire(keys.host_lease_key(name), self.lease_ms)
        await pipe.execute()
        return ours

    async def release(self, names: list[str]) -> None:
        """Give back the leases of hosts no longer served here (only where they are still ours)."""
        for name in names:
            key = keys.host_lease_key(name)
            if await self.redis.get(key) == self.id.encode():
                await self.redis.delete(key)

    # -- notifications and connection tests --------------------------------------------------------------------
    async def listen(self) -> None:
        """Follow ``corral:hosts:changed`` (re-subscribing after a lost connection) until cancelled."""

        async def session(pubsub: PubSubConnection) -> None:
            await pubsub.subscribe(keys.HOSTS_CHANNEL)
            self.changed.set()  # what changed while unsubscribed
            await pubsub.wait_closed()

        await resubscribing(self.settings.redis_url, self.redis, self.on_message, session)

    def on_message(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        self.changed.set()
        try:
            asked = jsonfast.loads(message["data"])
            name, reply = str(asked["test"]), str(asked["reply"])
        except (ValueError, TypeError, KeyError):
            return
        task = asyncio.create_task(self.answer_test(name, reply))
        self.tests.add(task)
        task.add_done_callback(self.tests.discard)

    async def answer_test(self, name: str, reply: str) -> None:
        """Run a host's connection test when this process serves it (or nobody does) and push the answer."""
        holder = await self.redis.get(keys.host_lease_key(name))
        spec = (await load_hosts(self.redis)).get(name)
        if spec is None or holder not in (None, self.id.encode()):
            return
        answer = await test_host(spec, self.settings)
        answer["served_by"] = self.id
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(keys.host_test_key(reply), jsonfast.dumps(answer))
        pipe.expire(keys.host_test_key(reply), TEST_ANSWER_TTL)
        await pipe.execute()

    def drain(self) -> None:
        """Drain every worker, then stop. A second signal exits at once (the janitor re-queues what ran)."""
        if self.draining.is_set():
            log.warning("second signal: exiting now; running jobs will be re-queued")
            os._exit(1)
        log.info("fleet %s draining %d host(s)", self.id, len(self.served))
        self.draining.set()


async def test_host(spec: HostSpec, settings: Settings) -> dict[str, Any]:
    """``corral worker --check`` for one host: each check's line, and the exit code it would give."""
    lines: list[dict[str, Any]] = []
    code = await check_backend(
        spec.worker_settings(settings), lambda ok, text: lines.append({"ok": ok, "text": text})
    )
    return {"name": spec.name, "ok": code == 0, "code": code, "checks": lines}


async def _main(settings: Settings, hosts: list[HostSpec]) -> None:
    fleet = Fleet(settings, hosts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, fleet.drain)
    await fleet.run()


def run_fleet(settings: Settings, hosts: list[HostSpec] | None = None) -> None:
    """Run a fleet process until it is drained (uvloop when installed, as ``run_worker``)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(settings, hosts or []))
    else:
        uvloop.run(_main(settings, hosts or []))


__all__ = ["Fleet", "run_fleet", "test_host"]
