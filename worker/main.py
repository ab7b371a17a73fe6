"""The worker process: discovers its Ollama's models, pops only their queues, runs jobs in N slot threads.

Threads: the main thread pops jobs (one Lua call moves a job from a model queue to this worker's in-flight list
and marks it started, so a crash can never lose a popped job); ``slots`` executor threads run jobs; a listener
thread holds one pub/sub connection for wake-ups (enqueue publishes ``corral:wake:<model>``) and control
messages (cancel); a housekeeping thread refreshes models from ``/api/tags`` and writes the heartbeat.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import keys, registry
from common.connections import TRANSIENT, sync_redis, wait_for_redis
from common.janitor import Janitor
from common.jobs import Limits, PoppedJob
from common.names import normalise_model
from common.settings import Settings
from common.store import JobStore

from .load import cpu_ram, gpu_stats
from .ollama import OllamaClient, OllamaError
from .runner import Active, JobRunner

log = logging.getLogger("corral.worker")
IDLE_POLL = 1.0  # a missed wake-up (Redis restart) costs at most this


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.id = settings.worker_id
        self.redis = sync_redis(settings.redis_url, name=f"corral-worker:{self.id}")
        self.store = JobStore(self.redis, Limits.from_settings(settings))
        self.ollama = OllamaClient(settings.ollama_url, settings.worker_slots)
        self.local_names: dict[str, str] = {}
        self.runner = JobRunner(self.store, self.ollama, self.id, self.local_names)
        self.models: list[str] = []
        self.loaded: list[str] = []
        self.healthy = False
        self._ollama_down = False
        self.draining = threading.Event()
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.active: dict[str, Active] = {}
        self.slots = threading.BoundedSemaphore(settings.worker_slots)
        self.executor = ThreadPoolExecutor(settings.worker_slots, thread_name_prefix="slot")
        self.info = registry.WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            ollama_url=settings.ollama_url,
            slots_total=settings.worker_slots,
            started_at=time.time(),
        )
        self._dropped: set[str] = set()
        self._rotation = 0

    # -- models and heartbeat -----------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Read /api/tags and /api/ps; on failure keep the last list and mark this host unhealthy."""
        try:
            names = self.ollama.list_models()
            loaded = self.ollama.loaded_models()
        except OllamaError as exc:
            if not self._ollama_down:
                log.warning(
                    "ollama at %s unavailable (%s); not taking jobs", self.settings.ollama_url, exc.message
                )
            self._ollama_down = True
            self.healthy = False
            return
        mapping = {}
        for name in names:
            try:
                mapping[normalise_model(name)] = name
            except Exception:  # a name Corral cannot queue is skipped, not fatal
                log.warning("skipping model with unusable name %r", name)
        models = sorted(mapping)
        if models != self.models:
            log.info("models: %s", ", ".join(models) or "(none)")
        if self._ollama_down:
            log.info("ollama at %s is up", self.settings.ollama_url)
        self._ollama_down = False
        self._dropped |= set(self.models) - set(models)
        self.local_names.clear()
        self.local_names.update(mapping)
        self.models = models
        self.loaded = sorted(normalise_model(n) for n in loaded)
        self.healthy = True
        self.wake.set()

    def beat(self) -> None:
        info = self.info
        info.models = list(self.models)
        info.loaded = list(self.loaded)
        info.running = list(self.active)
        info.state = "draining" if self.draining.is_set() else "active"
        info.healthy = self.healthy
        info.cpu_percent, info.ram_used, info.ram_total = cpu_ram()
        registry.heartbeat(self.redis, info, self.settings.heartbeat_ttl, self._dropped)
        self._dropped = set()

    def housekeeping(self) -> None:
        last_refresh = 0.0
        logged = False
        while not self.stopped.is_set():
            try:
                if time.monotonic() - last_refresh >= self.settings.model_refresh_interval:
                    self.refresh_models()
                    self.info.gpu = gpu_stats()
                    last_refresh = time.monotonic()
                self.beat()
                if logged:
                    log.info("redis is back")
                logged = False
            except TRANSIENT as exc:
                if not logged:
                    log.warning("heartbeat failed, redis unavailable: %s", exc)
                logged = True
            self.stopped.wait(self.settings.heartbeat_interval)

    # -- wake-ups and control messages --------------------------------------------------------------------
    def listen(self) -> None:
        pubsub: Any = None
        subscribed: set[str] = set()
        while not self.stopped.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    subscribed = set()
                wanted = {keys.wake_channel(m) for m in self.models} | {keys.control_channel(self.id)}
                if wanted - subscribed:
                    pubsub.subscribe(*(wanted - subscribed))
                if subscribed - wanted:
                    pubsub.unsubscribe(*(subscribed - wanted))
                subscribed = wanted
                message = pubsub.get_message(timeout=0.5)
                if message:
                    self.on_message(message)
            except TRANSIENT:
                pubsub = None
                self.stopped.wait(0.5)
        if pubsub is not None:
            pubsub.close()

    def on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if channel == keys.control_channel(self.id):
            try:
                command = json.loads(message["data"])
                job_id = str(command.get("cancel", ""))
            except (ValueError, AttributeError):
                return
            if command.get("drain") and not self.draining.is_set():
                log.info("drain asked through redis")
                self.drain()
                return
            active = self.active.get(job_id)
            if active is not None:
                log.info("cancelling job %s", job_id)
                active.request_cancel()
        else:
            self.wake.set()

    # -- the pop loop -------------------------------------------------------------------------------------
    def recover_own_jobs(self) -> None:
        """Jobs a previous life of this worker id left in flight go back to the front of their queues."""
        for job_id in self.store.inflight(self.id):
            state, attempt = self.store.requeue(job_id, f"worker {self.id} restarted", worker_id=self.id)
            log.warning(
                "job %s left running by a previous %s: %s (attempt %d)", job_id, self.id, state, attempt
            )

    def next_queue_order(self) -> list[str]:
        models = self.models
        if not models:
            return []
        self._rotation = (self._rotation + 1) % len(models)
        return models[self._rotation :] + models[: self._rotation]

    def pop_loop(self) -> None:
        delay = 0.1
        while not self.draining.is_set():
            if not self.slots.acquire(timeout=0.5):
                continue
            if not (self.healthy and self.models):
                self.slots.release()
                self.wake.wait(IDLE_POLL)
                self.wake.clear()
                continue
            self.wake.clear()
            try:
                job = self.store.pop(self.id, self.next_queue_order())
                delay = 0.1
            except Exception as exc:  # Redis down or a script error: never let the pop loop die
                self.slots.release()
                log.warning("pop failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                self.draining.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            if job is None:
                self.slots.release()
                self.wake.wait(IDLE_POLL)
                continue
            self.start_job(job)

    def start_job(self, job: PoppedJob) -> None:
        active = Active(job)
        self.active[job.id] = active
        self.executor.submit(self.run_job, active)

    def run_job(self, active: Active) -> None:
        try:
            outcome = self.runner.run(active)
            if outcome.host_unavailable:
                self.healthy = False
            if outcome.model_missing or outcome.host_unavailable:
                self.refresh_models()
        except Exception:
            log.exception("job %s crashed the runner; it stays in flight for recovery", active.job.id)
        finally:
            # the pop loop, blocked on a free slot, pops again as soon as this one is released
            self.active.pop(active.job.id, None)
            self.slots.release()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def run(self) -> None:
        wait_for_redis(self.redis, timeout=3600, what=f"redis at {self.settings.redis_url}")
        self.recover_own_jobs()
        self.refresh_models()
        self.beat()
        threads = [
            threading.Thread(target=self.housekeeping, name="housekeeping", daemon=True),
            threading.Thread(target=self.listen, name="listener", daemon=True),
        ]
        for thread in threads:
            thread.start()
        _janitor_thread, janitor_stop = Janitor(
            self.store, self.settings.heartbeat_ttl, self.settings.janitor_interval
        ).start()
        log.info(
            "worker %s up: ollama %s, %d slots", self.id, self.settings.ollama_url, self.settings.worker_slots
        )
        try:
            self.pop_loop()
        finally:
            log.info("worker %s draining: finishing %d running job(s)", self.id, len(self.active))
            self.executor.shutdown(wait=True)
            janitor_stop.set()
            self.stopped.set()
            for thread in threads:
                thread.join(timeout=5)
            try:
                registry.deregister(self.redis, self.id, self.models)
            except TRANSIENT:
                log.warning("could not deregister: redis unavailable")
            self.ollama.close()
            log.info("worker %s stopped", self.id)

    def drain(self, *_: object) -> None:
        """Stop taking jobs, finish the running ones, deregister. A second signal exits at once."""
        if self.draining.is_set():
            log.warning("second signal: exiting now; running jobs will be re-queued")
            os._exit(1)
        self.draining.set()
        self.wake.set()


def run_worker(settings: Settings) -> None:
    worker = Worker(settings)
    signal.signal(signal.SIGTERM, worker.drain)
    signal.signal(signal.SIGINT, worker.drain)
    worker.run()


def main() -> None:  # pragma: no cover - `python -m worker.main`
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(settings)


if __name__ == "__main__":
    main()
