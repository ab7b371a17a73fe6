"""How jobs come to this worker: it pops them from the queues of the models its engine has (one Lua call moves a job
to the worker's in-flight list and marks it started, so a crash never loses a popped job), and when a pop finds
nothing it parks, so that the next enqueue of one of those models hands its job straight here (push dispatch,
docs/scheduling.md). Handed or popped, a job starts through ``Jobs.start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

from corral.common import link
from corral.common.connections import TRANSIENT
from corral.common.delays import Delays
from corral.common.jobs import PoppedJob
from corral.common.schedule import Switch, choose_victim, keep_running, plan_pop
from corral.common.store import AsyncJobStore, Park, Popped

from .execute import Active
from .jobs import Jobs
from .models import Models

log = logging.getLogger("corral.worker")
IDLE_POLL = 1.0  # a missed wake-up (Redis restart) costs at most this
PARK_TTL = 1.5 * IDLE_POLL  # an idle worker pops (and so renews its park) at least every IDLE_POLL


class Dispatcher:
    """The pop loop and the park of one worker. ``wake`` ends a wait for jobs (an enqueue, a model drained, the
    engine's models changed); ``draining`` ends the loop."""

    def __init__(
        self,
        store: AsyncJobStore,
        worker_id: str,
        models: Models,
        jobs: Jobs,
        push: bool,
        wake: asyncio.Event,
        draining: asyncio.Event,
        delays: Delays | None = None,
    ) -> None:
        self.store = store
        self.delays = delays  # None: the store's fixed delays
        self.worker_id = worker_id
        self.models = models
        self.jobs = jobs
        self.slots = jobs.slots
        self.push = push  # CORRAL_PUSH_DISPATCH: park when a pop finds nothing
        self.wake = wake
        self.draining = draining
        self.switch: Switch | None = None
        self.rotation = 0
        # jobs handed while no slot was free, whether the last pop parked the worker, and the last handed job
        # started (the pop is told it: a hand it has seen is not returned again)
        self.handed: deque[PoppedJob] = deque()
        self.parked = False
        self.seen = ""
        self.taking = ""  # a job the park's end handed over, waiting for a slot
        self.prefer = ""  # the model of the job this parked worker was woken for: its next pop tries it first
        # says on the direct links where this worker is parked (worker/link.py ``Links.announce``)
        self.announce: Callable[[bytes], None] | None = None

    def start(self, job: PoppedJob, handed: bool = False) -> Active | None:
        """Start a job in the slot taken for it (``handed``: by an enqueue, which ended the park); None when it had
        started already."""
        if handed:
            self.seen = job.id
            self.set_parked(False)
        return self.jobs.start(job)

    def set_parked(self, parked: bool, names: Sequence[str] = (), flags: str = "", slots: int = 0) -> None:
        """Whether the last pop parked this worker (for ``names`` with their pop ``flags``), said on the links."""
        was, self.parked = self.parked, parked
        if self.announce is None:
            return
        if parked:  # (an API sends a job ahead only to a worker with its model loaded: api/link.py)
            warm = [m for m, f in zip(names, flags, strict=False) if f == "1"]
            self.announce(link.park_line(self.worker_id, slots, warm))
        elif was:
            self.announce(link.unpark_line(self.worker_id))

    def on_early(self, job: PoppedJob) -> None:
        """A job an API sent over the direct link ahead of the enqueue that hands it here (api/link.py): started
        now when this worker is parked and has a slot free, else left to the hand. Until the hand comes (its message,
        or the next pop's answer: ``Jobs.start`` sees the job twice) the run sends nothing to the API, and its
        writes to Redis are fenced off if the enqueue gave the job to another worker."""
        if not self.parked or not self.slots.try_acquire():
            return
        job.confirmed = False
        active = self.jobs.start(job)
        if active is not None:
            active.on_accepted = self.wake.set

    def on_handed(self, job: PoppedJob) -> None:
        """A job an enqueue handed to this parked worker (its control message): started here and now; the pop loop
        parks the worker again once the backend has answered the job's request (its pop would compete with the
        request for the CPU and for Redis meanwhile). Without a free slot the pop loop starts it when one is free."""
        # running already (popped, or sent ahead over the direct link), in a slot of its own
        if self.jobs.confirm(job):
            self.seen = job.id
            self.set_parked(False)
            self.wake.set()
            return
        if not self.slots.try_acquire():
            self.handed.append(job)
            self.wake.set()
            return
        active = self.start(job, handed=True)
        if active is None:
            self.wake.set()
        else:
            active.on_accepted = self.wake.set

    def woken(self, model: str) -> None:
        """An enqueue queued a job of ``model`` and woke this parked worker (and no other) to pop it."""
        self.prefer = model
        self.wake.set()

    def holding(self) -> set[str]:
        """The ids of the jobs taken and not started yet (waiting for a slot)."""
        return {job.id for job in self.handed} | ({self.taking} - {""})

    def keep_claimed(self) -> set[str]:
        """The models whose warm claims stay while not warm here: the target of a switch."""
        return {self.switch.target} if self.switch else set()

    def next_pop(self, warm: set[str]) -> tuple[list[str], str]:
        """The queues to try and their flags: warm first (delay scheduling), within the host's model capacity."""
        self.rotation = (self.rotation + 1) % 1_000_000
        names = self.models.names
        if self.switch and {self.switch.target, self.switch.victim} - {""} - set(names):  # a model left
            self.switch = None
        limit = self.models.capacity.limit
        running = self.models.running
        dropped = set(running) - keep_running(
            running, set(self.models.loaded), limit
        )  # over capacity: these drain
        return plan_pop(
            [m for m in names if m not in dropped], warm, set(running), limit, self.switch, self.rotation
        )

    def follow(self, popped: Popped, flags: str) -> None:
        """Follow a pop's answer: start a switch it signalled, end a switch whose target was offered."""
        if popped.switch is not None:
            victim = choose_victim(popped.switch, set(self.models.running), self.models.capacity.limit)
            self.switch = Switch(popped.switch.model, victim)
            self.models.claimed.add(popped.switch.model)
            log.info("switching models: %s waits with no worker serving it; %s", popped.switch.model,
                     f"draining {victim} to make room" if victim else "there is room")  # fmt: skip
        elif self.switch is not None and flags.startswith("t"):
            self.switch = None  # the target was offered first: taken, or no longer waiting

    async def wait_wake(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: that wraps every wait in a new task
                await self.wake.wait()

    def park(self) -> Park | None:
        """How this pop parks the worker if it finds nothing (it holds a slot: at least one is free)."""
        if not self.push:
            return None
        return Park(slots=self.slots.free + 1, ttl=PARK_TTL, seen=self.seen)

    async def end_park(self) -> None:
        """Leave the park (unhealthy, draining); a job handed meanwhile is started all the same."""
        if not self.parked:
            return
        try:
            job = await self.store.unpark(self.worker_id, self.seen)
        except TRANSIENT as exc:  # the park lapses by itself in PARK_TTL
            log.warning("could not leave the park (%s)", exc)
            return
        self.set_parked(False)
        if job is not None:
            self.taking = job.id
            try:
                await self.slots.acquire()
            finally:
                self.taking = ""
            self.start(job)

    async def pop(self) -> Popped:
        """One pop for the slot taken: the warm queues first; parks the worker if it finds nothing."""
        warm = self.models.warm()
        self.models.claimed |= warm
        names, flags = prefer_first(*self.next_pop(warm), self.prefer)
        self.prefer = ""
        park = self.park()
        delays = self.delays.arguments(names, self.models.load_times) if self.delays else None
        popped = await self.store.pop_planned(self.worker_id, names, flags, park, delays)
        parked = park is not None and popped.job is None and popped.switch is None
        self.set_parked(parked, names, flags, park.slots if park is not None else 0)
        self.follow(popped, flags)
        return popped

    async def run(self) -> None:
        """Take jobs until the worker drains: a handed one waiting for a slot first, else the next pop's."""
        delay = 0.1
        while not self.draining.is_set():
            await self.slots.acquire()
            if self.handed:
                self.start(self.handed.popleft(), handed=True)
                await asyncio.sleep(0)  # let the job send its request before this loop's next pop
                continue
            if self.draining.is_set() or not (self.models.healthy and self.models.names):
                self.slots.release()
                await self.end_park()
                await self.wait_wake(IDLE_POLL)
                self.wake.clear()
                continue
            self.wake.clear()
            try:
                popped = await self.pop()
                delay = 0.1
            except Exception as exc:  # Redis down or a script error: never let the pop loop die
                self.slots.release()
                log.warning("pop failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if popped.job is None:
                self.slots.release()
                if popped.switch is None and not self.handed:
                    await self.wait_wake(min(popped.wait, IDLE_POLL) if popped.wait > 0 else IDLE_POLL)
                continue
            self.start(popped.job)
            await asyncio.sleep(0)  # let the job send its request before this loop's next pop
        await self.end_park()


def prefer_first(names: list[str], flags: str, model: str) -> tuple[list[str], str]:
    """The pop's queues with ``model`` first when it is warm ('1') there: the job a wake-up was for, before a warm
    queue's job that another woken worker may be coming for. Not during a switch (its target goes first: 't')."""
    i = names.index(model) if model in names else -1
    if i <= 0 or flags[i] != "1" or flags.startswith("t"):
        return names, flags
    return [model, *names[:i], *names[i + 1 :]], "1" + flags[:i] + flags[i + 1 :]
