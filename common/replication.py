"""Acknowledged means replicated (``CORRAL_ACK_REPLICAS``): a submit's script, then ``WAIT`` on the same connection.

``WAIT numreplicas timeout`` answers how many replicas have acknowledged every write its connection made, so it is
sent right behind the script, on the connection that ran it (the lean client: one write of both; redis-py: a
pipeline of both). A count short of what was asked means the job is on the primary alone: a failover now would
lose it, so the API answers 503 (``NotReplicated``) with the job's id rather than 202.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from .errors import NotReplicated
from .scripts import LuaScript


async def together(client: Any, *commands: tuple[Any, ...]) -> list[Any]:
    """``commands`` on one connection, in order: each reply, or the exception of an error reply."""
    execute_many = getattr(client, "execute_many", None)
    if execute_many is not None:  # the lean client
        replies: list[Any] = await execute_many(*commands)
        return replies
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results


async def call_acked(
    script: LuaScript, keys: Sequence[str], args: Sequence[Any], client: Any, replicas: int, timeout_ms: int
) -> tuple[Any, int]:
    """The script's reply and how many replicas hold its writes (``WAIT replicas timeout_ms`` after it)."""
    evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)
    for attempt in range(2):
        reply, acked = await together(client, evalsha, ("WAIT", replicas, timeout_ms))
        if isinstance(reply, NoScriptError) and attempt == 0:  # a new primary after a failover, say
            await client.execute_command("SCRIPT", "LOAD", script.source)
            continue
        for result in (reply, acked):
            if isinstance(result, Exception):
                raise result
        return reply, int(acked)
    raise AssertionError("unreachable")


async def acked_or_refused(
    call: tuple[LuaScript, Sequence[str], Sequence[Any]],
    client: Any,
    replicas: int,
    timeout_ms: int,
    ids: Callable[[Any], list[str]],
) -> Any:
    """The script's reply once ``replicas`` replicas hold it; ``NotReplicated`` (naming the job ids ``ids`` reads
    from the reply) when fewer did in time. A refusal in the reply raises as itself, through ``ids``."""
    reply, acked = await call_acked(*call, client, replicas, timeout_ms)
    if acked < replicas:
        raise NotReplicated(ids(reply), acked, replicas)
    return reply


__all__ = ["acked_or_refused", "call_acked", "together"]
