"""What reaches this worker by pub/sub, on one subscriber connection: the messages of its control channel (a job
handed to it, a wake-up, a cancel, a drain) and, without push dispatch, the wake-ups of its models' queues (every
enqueue publishes ``corral:wake:<model>``). With push dispatch an enqueue that queues its job wakes one parked
worker on its control channel instead: a broadcast would make every idle worker holding the model pop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from corral.common import jsonfast, keys
from corral.common.jobs import decode_popped
from corral.common.pubsub import PubSubConnection, resubscribing

from .dispatch import Dispatcher
from .jobs import Jobs

log = logging.getLogger("corral.worker")


class Control:
    """Follows the channels of one worker and routes their messages: wake-ups and handed jobs to the dispatcher,
    cancels to the running jobs, a drain to ``drain``."""

    def __init__(
        self,
        redis_url: str,
        redis: aioredis.Redis,
        worker_id: str,
        dispatcher: Dispatcher,
        jobs: Jobs,
        drain: Callable[[], None],
        more: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.redis = redis
        self.channel = keys.control_channel(worker_id)
        self.dispatcher = dispatcher
        self.jobs = jobs
        self.drain = drain
        self.more = more  # other commands (model tasks): True when it took the message
        self.job_timeout = dispatcher.store.limits.job_timeout

    def channels(self) -> set[str]:
        if self.dispatcher.push:
            return {self.channel}
        return {keys.wake_channel(m) for m in self.dispatcher.models.names} | {self.channel}

    async def listen(self) -> None:
        """Subscribe and follow the model list (re-subscribing after a lost connection) until cancelled."""
        await resubscribing(self.redis_url, self.redis, self.on_message, self.follow_channels)

    async def follow_channels(self, pubsub: PubSubConnection) -> None:
        """Keep the subscriptions to ``channels()`` (checked every half second) until the connection closes."""
        closed = asyncio.ensure_future(pubsub.wait_closed())
        subscribed: set[str] = set()
        while not closed.done():
            wanted = self.channels()
            await pubsub.subscribe(*(wanted - subscribed))
            await pubsub.unsubscribe(*(subscribed - wanted))
            subscribed = wanted
            await asyncio.wait([closed], timeout=0.5)
        closed.result()

    def on_link_line(self, line: bytes) -> None:
        """A line an API sent on the direct link: a job sent ahead of its hand (``{"dispatch": …}``)."""
        try:
            command = jsonfast.loads(line)
            self.dispatcher.on_early(decode_popped(command["dispatch"], self.job_timeout))
        except (ValueError, KeyError, TypeError, IndexError):
            log.debug("link: a line that is not a job: %.80r", line)

    def on_message(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        if message["channel"].decode() != self.channel:
            self.dispatcher.wake.set()
            return
        try:
            command = jsonfast.loads(message["data"])
            job_id = str(command.get("cancel", ""))
            if "dispatch" in command:
                self.dispatcher.on_handed(decode_popped(command["dispatch"], self.job_timeout))
                return
            if "wake" in command:  # a job was queued for this parked worker to pop
                self.dispatcher.woken(str(command.get("model", "")))
                return
            if self.more is not None and self.more(command):
                return
        except (ValueError, AttributeError, TypeError, IndexError):
            return
        if command.get("drain") and not self.dispatcher.draining.is_set():
            log.info("drain asked through redis")
            self.drain()
        if job_id:
            self.jobs.cancel(job_id)
