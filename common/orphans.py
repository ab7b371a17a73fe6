"""The janitor's walk over the history index for jobs that nothing would look at again (``lua/rescue.lua``).

Each script keeps a queued job in its queue's list and a started job in its worker's in-flight list, in one atomic
step. A job can still end up outside them: a script that fails half-way keeps what it wrote before the failure
(Redis does not roll a script back), and after a Redis ``kill -9`` the workers act on replies and messages of the
second the AOF lost. A queued job in no list is never popped, and a started job in no in-flight list is never
recovered, so each janitor pass looks at the next ``STEP`` jobs of ``corral:history`` (by age, oldest first, in a
circle): a queued job missing from its queue goes back to its front (and wakes a worker), one in its queue but out
of the fair-share index (which the pop serves first) goes back into the index, a started job missing
from its worker's in-flight list is listed there again (the worker's in-flight check, or the janitor when the
worker is dead, then re-queues it unless it runs). One round trip a pass; the whole history is walked every
``CORRAL_HISTORY_MAX / STEP`` passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from .logs import job_event
from .scripts import RESCUE, NoKeys, RescueArgs

log = logging.getLogger("corral.janitor")
STEP = 1000  # history entries looked at per pass (one HMGET each, inside the script: ~0.5 ms of Redis)
BUDGET = 100_000  # queue list entries a pass may walk to look for a queued job (LPOS is linear)
REASONS = {  # the job rescued line's reason, by what the step did
    "queued": "queued but in no queue: put back at its front",
    "indexed": "queued but out of the fair-share index: indexed again",
    "listed": "started but not in flight: listed again",
}


@dataclass
class Rescued:
    """What one step put back."""

    queued: list[str] = field(default_factory=list)  # back in their queue
    listed: list[str] = field(default_factory=list)  # back in their worker's in-flight list
    indexed: list[str] = field(default_factory=list)  # in their queue, back in the fair-share index

    def __len__(self) -> int:
        return len(self.queued) + len(self.listed) + len(self.indexed)


class OrphanWalk:
    """The walk's position (a history rank) and its steps."""

    def __init__(self, client: redis.Redis, step: int = STEP, budget: int = BUDGET) -> None:
        self.redis = client
        self.step = step
        self.budget = budget
        self.cursor = 0

    def next_step(self) -> Rescued:
        after, *found = RESCUE(
            self.redis, NoKeys(), RescueArgs(cursor=self.cursor, step=self.step, budget=self.budget)
        )
        self.cursor = int(after)
        out = Rescued(*([i.decode() for i in ids] for ids in found))
        for kind, reason in REASONS.items():
            for job_id in getattr(out, kind):
                job_event("rescued", job_id, logging.WARNING, reason=reason)
        return out
