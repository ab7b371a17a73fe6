"""Ending background tasks for sure: a cancel that a task swallowed is sent again.

On Python 3.11 ``asyncio.wait_for`` returns the inner result, and drops the cancel, when the cancel and that result
arrive in the same turn of the loop (CPython gh-86296, fixed in 3.12 by rewriting ``wait_for``). redis-py 8 sends
every command through ``wait_for`` (its connections have a 5 s socket timeout by default), so a helper cancelled as
its command went out could carry on with its loop: a worker sent SIGTERM right after it started logged "draining"
and then waited for that helper forever, in about one start of three. Corral's own code uses ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)
ROUND = 0.05  # seconds a cancel is given before it is sent again
ROUNDS = 100  # a task still running after ~5 s of cancels is left behind, with a log line that names it


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any that did not end within
    ``ROUND``; what they raised is not re-raised."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(ROUNDS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=ROUND)
    for task in pending:
        log.error("task %r did not end after %d cancels; left running", task, ROUNDS)
