"""The worker process (asyncio): discovers its Ollama's models, pops only their queues, runs up to N jobs.

One event loop runs everything: the pop loop (one Lua call moves a job from a model queue to this worker's
in-flight list and marks it started, so a crash can never lose a popped job), one task per running job, a
listener on one pub/sub connection for wake-ups (every enqueue publishes ``corral:wake:<model>``) and control
messages (cancel, drain), and housekeeping (models from ``/api/tags`` and ``/api/ps``, the heartbeat). The janitor
runs in a thread with its own connection. No process is forked per job and no thread per slot: at many slots,
threads cost more CPU per job in GIL hand-offs than the work itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import Counter, deque
from typing import Any

from corral.common import jsonfast, keys, registry
from corral.common.connections import TRANSIENT, async_redis, sync_redis
from corral.common.fastredis import fast_redis, pubsub_connection
from corral.common.janitor import Janitor
from corral.common.jobs import Limits, PoppedJob, decode_popped
from corral.common.names import normalise_model
from corral.common.schedule import Capacity, Switch, choose_victim, keep_running, plan_pop
from corral.common.settings import Settings, redacted_url
from corral.common.store import AsyncJobStore, JobStore, Park, Popped

from .backend import BackendError, make_backend
from .execute import Active, JobRunner
from .load import cpu_ram, gpu_stats

log = logging.getLogger("corral.worker")
# Fault injection for the tests: the worker dies (like a SIGKILL) at the named point. Never set in production.
FAULT_POINT = os.environ.get("CORRAL_TEST_FAULT", "")


def crash_here(point: str) -> None:
    if point == FAULT_POINT:
        os._exit(137)


IDLE_POLL = 1.0  # a missed wake-up (Redis restart) costs at most this
PARK_TTL = 1.5 * IDLE_POLL  # an idle worker pops (and so renews its park) at least every IDLE_POLL
STARTED_KEPT = 256  # ids of the latest jobs started, so that a handed job is never started twice


class Slots:
    """The worker's free job slots: a counting semaphore that can also be taken without waiting (a job handed by
    an enqueue starts from the message handler, not a task)."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._freed = asyncio.Event()

    def try_acquire(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        return True

    async def acquire(self) -> None:
        while not self.try_acquire():
            self._freed.clear()
            await self._freed.wait()

    def release(self) -> None:
        self.free += 1
        self._freed.set()


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.id = settings.worker_id
        self.redis = async_redis(settings.redis_url, name=f"corral-worker:{self.id}")
        self.fast = fast_redis(settings.redis_url)
        self.store = AsyncJobStore(self.redis, Limits.from_settings(settings), fast=self.fast)
        self.ollama = make_backend(settings)
        self.local_names: dict[str, str] = {}
        self.runner = JobRunner(self.store, self.ollama, self.id, self.local_names)
        self.models: list[str] = []
        self.loaded: list[str] = []
        self.healthy = False
        self._ollama_down = False
        self.draining = asyncio.Event()
        self.wake = asyncio.Event()
        self.active: dict[str, Active] = {}
        self.slots = Slots(settings.worker_slots)
        self.info = registry.WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            ollama_url=settings.engine_display_url,
            slots_total=settings.worker_slots,
            backend=settings.engine_kind,
            max_loaded_models=settings.max_loaded_models,
            weight=settings.worker_weight,
            started_at=time.time(),
        )
        self._dropped: set[str] = set()
        self._rotation = 0
        self.recent: dict[str, float] = {}  # model -> when this worker last started one of its jobs
        self.claimed: set[str] = set()  # models this worker has told the pop it has loaded
        self.capacity = Capacity(settings.max_loaded_models)
        self.switch: Switch | None = None
        # push dispatch: jobs handed to this worker while no slot was free, whether its last pop parked it, the
        # last handed job it started, and the latest starts ("id/start seq", oldest first: none runs twice)
        self.handed: deque[PoppedJob] = deque()
        self.parked = False
        self.seen = ""
        self.started: dict[str, None] = {}

    # -- models and heartbeat -----------------------------------------------------------------------------
    async def refresh_models(self) -> None:
        """Read /api/tags and /api/ps; on failure keep the last list and mark this host unhealthy."""
        try:
            tags = await self.ollama.list_models()
            asked = time.monotonic()
            ps = await self.ollama.loaded_models()
        except BackendError as exc:
            if not self._ollama_down:
                log.warning("%s at %s unavailable (%s); not taking jobs", self.ollama.kind,
                            self.settings.engine_display_url, exc.message)  # fmt: skip
            self._ollama_down = True
            self.healthy = False
            self.wake.set()  # the pop loop leaves its park
            return
        names = [str(m.get("name") or m.get("model")) for m in tags]
        loaded = [str(m.get("name") or m.get("model")) for m in ps]
        self.info.tags, self.info.ps = tags, ps
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
            log.info("%s at %s is up", self.ollama.kind, self.settings.engine_display_url)
        self._ollama_down = False
        self._dropped |= set(self.models) - set(models)
        self.local_names.clear()
        self.local_names.update(mapping)
        self.models = models
        self.set_loaded(loaded, asked)
        self.healthy = True
        self.wake.set()

    def set_loaded(self, names: list[str], asked: float) -> None:
        """What /api/ps said; jobs started since the question was asked still count as warm."""
        self.loaded = sorted(normalise_model(n) for n in names)
        self.recent = {m: t for m, t in self.recent.items() if t >= asked}
        if self.capacity.observe(set(self.loaded), self.running_models()):
            log.info("the backend evicted a model to load another: it holds %d at once (learned; set "
                     "CORRAL_MAX_LOADED_MODELS to say so up front)", self.capacity.limit)  # fmt: skip
        self.info.max_loaded_models = self.capacity.limit

    async def refresh_loaded(self) -> None:
        """Read /api/ps alone (between the slower /api/tags reads) and withdraw stale warm claims."""
        with contextlib.suppress(BackendError):
            asked = time.monotonic()
            ps = await self.ollama.loaded_models()
            self.set_loaded([str(m.get("name") or m.get("model")) for m in ps], asked)
            self.info.ps = ps
        stale = self.claimed - self.warm_models() - ({self.switch.target} if self.switch else set())
        if stale:
            pipe = self.redis.pipeline(transaction=False)
            for model in stale:
                pipe.zrem(keys.warm_key(model), self.id)
            await pipe.execute()
            self.claimed -= stale

    def running_models(self) -> set[str]:
        return {a.job.model for a in self.active.values()}

    def warm_models(self) -> set[str]:
        """Models loaded in this worker's Ollama, as far as it knows: /api/ps, plus its running and recent jobs."""
        return set(self.loaded) | set(self.recent) | self.running_models()

    async def beat(self) -> None:
        info = self.info
        info.models = list(self.models)
        info.loaded = list(self.loaded)
        info.running = list(self.active)
        info.state = "draining" if self.draining.is_set() else "active"
        info.healthy = self.healthy
        info.cpu_percent, info.ram_used, info.ram_total = cpu_ram()
        pipe = self.redis.pipeline(transaction=True)
        registry.heartbeat_commands(pipe, info, self.settings.heartbeat_ttl, self._dropped)
        await pipe.execute()
        self._dropped = set()

    async def housekeeping(self) -> None:
        last_refresh = 0.0
        logged = False
        while True:
            try:
                try:  # the heartbeat goes out even when the backend or a thread takes long to answer
                    async with asyncio.timeout(self.settings.heartbeat_interval):
                        if time.monotonic() - last_refresh >= self.settings.model_refresh_interval:
                            await self.refresh_models()
                            self.info.gpu = await asyncio.to_thread(gpu_stats)
                            last_refresh = time.monotonic()
                        elif self.healthy:
                            await self.refresh_loaded()
                except TimeoutError:
                    log.warning("reading the backend's model lists took over %gs; heartbeat sent without them",
                                self.settings.heartbeat_interval)  # fmt: skip
                await self.beat()
                if logged:
                    log.info("redis is back")
                logged = False
            except TRANSIENT as exc:
                if not logged:
                    log.warning("heartbeat failed, redis unavailable: %s", exc)
                logged = True
            await asyncio.sleep(self.settings.heartbeat_interval)

    # -- wake-ups and control messages --------------------------------------------------------------------
    async def listen(self) -> None:
        """Wake-ups and control messages on one subscriber connection, following the model list."""
        while True:
            pubsub = pubsub_connection(self.settings.redis_url, self.redis, self.on_message)
            try:
                await pubsub.connect()
                closed = asyncio.ensure_future(pubsub.wait_closed())
                subscribed: set[str] = set()
                while not closed.done():
                    wanted = {keys.wake_channel(m) for m in self.models} | {keys.control_channel(self.id)}
                    await pubsub.subscribe(*(wanted - subscribed))
                    await pubsub.unsubscribe(*(subscribed - wanted))
                    subscribed = wanted
                    await asyncio.wait([closed], timeout=0.5)
                closed.result()
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except (*TRANSIENT, OSError):
                pass
            await pubsub.aclose()
            await asyncio.sleep(0.5)

    def on_message(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        channel = message["channel"].decode()
        if channel != keys.control_channel(self.id):
            self.wake.set()
            return
        try:
            command = jsonfast.loads(message["data"])
            job_id = str(command.get("cancel", ""))
            if "dispatch" in command:
                self.on_handed(decode_popped(command["dispatch"], self.store.limits.job_timeout))
                return
        except (ValueError, AttributeError, TypeError, IndexError):
            return
        if command.get("drain") and not self.draining.is_set():
            log.info("drain asked through redis")
            self.drain()
        active = self.active.get(job_id)
        if active is not None:
            log.info("cancelling job %s", job_id)
            active.request_cancel()

    # -- the pop loop -------------------------------------------------------------------------------------
    async def recover_own_jobs(self) -> None:
        """Jobs a previous life of this worker id left in flight go back to the front of their queues."""
        for job_id in await self.store.inflight(self.id):
            state, attempt = await self.store.requeue(
                job_id, f"worker {self.id} restarted", worker_id=self.id
            )
            log.warning(
                "job %s left running by a previous %s: %s (attempt %d)", job_id, self.id, state, attempt
            )

    def next_pop(self, warm: set[str]) -> tuple[list[str], str]:
        """The queues to try and their flags: warm first (delay scheduling), within the host's model capacity."""
        self._rotation = (self._rotation + 1) % 1_000_000
        if self.switch and {self.switch.target, self.switch.victim} - {""} - set(self.models):  # a model left
            self.switch = None
        limit = self.capacity.limit
        running = Counter(a.job.model for a in self.active.values())
        dropped = set(running) - keep_running(running, set(self.loaded), limit)  # over capacity: these drain
        models = [m for m in self.models if m not in dropped]
        return plan_pop(models, warm, set(running), limit, self.switch, self._rotation)

    def popped(self, popped: Popped, flags: str) -> None:
        """Follow a pop's answer: start a switch it signalled, end a switch whose target was offered."""
        if popped.switch is not None:
            victim = choose_victim(popped.switch, self.running_models(), self.capacity.limit)
            self.switch = Switch(popped.switch.model, victim)
            self.claimed.add(popped.switch.model)
            log.info("switching models: %s waits with no worker serving it; %s", popped.switch.model,
                     f"draining {victim} to make room" if victim else "there is room")  # fmt: skip
        elif self.switch is not None and flags.startswith("t"):
            self.switch = None  # the target was offered first: taken, or no longer waiting

    async def _wait_wake(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: that wraps every wait in a new task
                await self.wake.wait()

    def park(self) -> Park | None:
        """How this pop parks the worker if it finds nothing (it holds a slot: at least one is free)."""
        if not self.settings.push_dispatch:
            return None
        return Park(slots=self.slots.free + 1, ttl=PARK_TTL, seen=self.seen)

    async def end_park(self) -> None:
        """Leave the park (unhealthy, draining); a job handed meanwhile is started all the same."""
        if not self.parked:
            return
        try:
            job = await self.store.unpark(self.id, self.seen)
        except TRANSIENT as exc:  # the park lapses by itself in PARK_TTL
            log.warning("could not leave the park (%s)", exc)
            return
        self.parked = False
        if job is not None:
            await self.slots.acquire()
            self.take(job)

    def on_handed(self, job: PoppedJob) -> None:
        """A job an enqueue handed to this parked worker: started here and now; the pop loop parks the worker
        again once the backend has answered the job's request (its pop would compete with the request for the CPU
        and for Redis meanwhile). Without a free slot the pop loop takes the job when one is free."""
        if not self.slots.try_acquire():
            self.handed.append(job)
            self.wake.set()
            return
        active = self.take(job, handed=True)
        if active is None:
            self.wake.set()
        else:
            active.on_accepted = self.wake.set

    def take(self, job: PoppedJob, handed: bool = False) -> Active | None:
        """Start a popped or handed job, once (a handed job can come both by message and by the next pop)."""
        if handed:
            self.seen = job.id
            self.parked = False
        key = f"{job.id}/{job.start_seq}"
        if key in self.started:
            self.slots.release()
            return None
        self.started[key] = None
        if len(self.started) > STARTED_KEPT:
            del self.started[next(iter(self.started))]
        crash_here("after_pop")
        self.recent[job.model] = time.monotonic()
        return self.start_job(job)

    async def pop_loop(self) -> None:
        delay = 0.1
        while not self.draining.is_set():
            await self.slots.acquire()
            if self.handed:
                self.take(self.handed.popleft(), handed=True)
                await asyncio.sleep(0)  # let the job send its request before this loop's next pop
                continue
            if self.draining.is_set() or not (self.healthy and self.models):
                self.slots.release()
                await self.end_park()
                await self._wait_wake(IDLE_POLL)
                self.wake.clear()
                continue
            self.wake.clear()
            try:
                warm = self.warm_models()
                self.claimed |= warm
                models, flags = self.next_pop(warm)
                park = self.park()
                popped = await self.store.pop_planned(self.id, models, flags, park)
                self.parked = park is not None and popped.job is None and popped.switch is None
                self.popped(popped, flags)
                job, wait = popped.job, popped.wait
                delay = 0.1
            except Exception as exc:  # Redis down or a script error: never let the pop loop die
                self.slots.release()
                log.warning("pop failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if job is None:
                self.slots.release()
                if popped.switch is None and not self.handed:
                    await self._wait_wake(min(wait, IDLE_POLL) if wait > 0 else IDLE_POLL)
                continue
            self.take(job)
            await asyncio.sleep(0)  # let the job send its request before this loop's next pop
        await self.end_park()

    def start_job(self, job: PoppedJob) -> Active:
        active = Active(job)
        self.active[job.id] = active
        # the request goes to the backend before the task runs (a turn of the loop and its set-up later)
        active.early = early = self.runner.send_early(job)
        active.task = asyncio.create_task(self.run_job(active), name=f"job-{job.id}")
        if early is not None:  # a task cancelled before it ran never reads the answer: drop it
            active.task.add_done_callback(lambda _task: early.discard())
        return active

    async def run_job(self, active: Active) -> None:
        try:
            outcome = await self.runner.run(active)
            if outcome.host_unavailable:
                self.healthy = False
            if outcome.model_missing or outcome.host_unavailable:
                await self.refresh_models()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s crashed the runner; it stays in flight for recovery", active.job.id)
        finally:
            self.active.pop(active.job.id, None)
            self.slots.release()
            active.accepted()  # (a handed job that ended before its backend answered)
            if self.capacity.limit and active.job.model not in self.running_models():
                self.wake.set()  # a model drained: a pop that found nothing it could take may find something now

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        sync_client = sync_redis(self.settings.redis_url, name=f"corral-janitor:{self.id}")
        await self.wait_for_redis()
        if self.draining.is_set():
            await self.redis.aclose()
            sync_client.close()
            return
        await self.recover_own_jobs()
        await self.refresh_models()
        await self.beat()
        janitor = Janitor(JobStore(sync_client, self.store.limits), self.settings.heartbeat_ttl,
                          self.settings.janitor_interval)  # fmt: skip
        _thread, janitor_stop = janitor.start()
        helpers = [asyncio.create_task(self.housekeeping()), asyncio.create_task(self.listen())]
        log.info("worker %s up: %s %s, %d slots", self.id, self.ollama.kind, self.settings.engine_display_url,
                 self.settings.worker_slots)  # fmt: skip
        try:
            await self.pop_loop()
            log.info("worker %s draining: finishing %d running job(s)", self.id, len(self.active))
            running = [a.task for a in self.active.values() if a.task is not None]
            await asyncio.gather(*running, return_exceptions=True)
        finally:
            janitor_stop.set()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            with contextlib.suppress(*TRANSIENT):
                await registry.deregister_async(self.redis, self.id, self.models)
            await self.ollama.close()
            await self.redis.aclose()
            if self.fast is not None:
                await self.fast.aclose()
            sync_client.close()
            log.info("worker %s stopped", self.id)

    async def wait_for_redis(self) -> None:
        """Ping until Redis answers (a SIGTERM meanwhile ends the wait: there is nothing to drain yet)."""
        delay, attempt = 0.1, 0
        while not self.draining.is_set():
            attempt += 1
            try:
                await self.redis.ping()
                return
            except TRANSIENT as exc:
                log.warning(
                    "redis at %s not reachable (attempt %d): %s",
                    redacted_url(self.settings.redis_url),
                    attempt,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def drain(self) -> None:
        """Stop taking jobs, finish the running ones, deregister. A second signal exits at once."""
        if self.draining.is_set():
            log.warning("second signal: exiting now; running jobs will be re-queued")
            os._exit(1)
        self.draining.set()
        self.wake.set()


async def _main(settings: Settings) -> None:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.drain)
    await worker.run()


def run_worker(settings: Settings) -> None:
    # uvloop (installed with uvicorn[standard]) when there: its transports and scheduling cost a fraction of
    # the default loop's CPU per job
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(settings))
    else:
        uvloop.run(_main(settings))


__all__ = ["Worker", "run_worker"]
