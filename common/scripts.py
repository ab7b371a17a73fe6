"""The job state machine: one Lua script per state change, each one atomic round trip (common/lua/*.lua).

Each script's KEYS and ARGV are named once, here, by a NamedTuple each: callers build them by name, and the loader
binds the same names in Lua before the script (``KEY.job = KEYS[1]``, ``ARG.id = ARGV[1]``, ``KEY_REST`` and
``ARG_REST``: the first index after the named ones, for a script that takes more). Each ``.lua`` file's header
lists its names (a test holds the two together). Key names come from ``common.keys`` alone: the loader turns each
of its functions into a Lua function of the same name (``job_key(id)``) and each constant into a Lua constant.
Shared helpers live in ``lua/lib.lua``; a script gets the ones it uses (see ``_shake``).

Every script that changes a running job checks its fence first: the job's ``attempt`` and ``worker_name`` must
still be the caller's, so a worker presumed dead can never write into a job that another worker now runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from redis.exceptions import NoScriptError

from . import keys
from .schedule import STARTS_KEPT

PARK_KEEP_MS = 600_000  # a park record outlives its use; an enqueue checks its ``until``
# added to the free slots of a worker parked for a model it has loaded (parks rank by score)
WARM_PARK = 1_000_000
Layout = type[tuple[Any, ...]]  # a NamedTuple class: its ``_fields`` name KEYS or ARGV entries in order


# -- the layouts: KEYS and ARGV of each script, by name -------------------------------------------------------------
class NoKeys(NamedTuple):
    """A script that takes no keys (it builds its key names from ``common.keys``)."""


class JobKey(NamedTuple):
    job: str  # the job hash


class EndArgs(NamedTuple):
    """CANCEL and EXPIRE_QUEUED: the job and how long what they write is kept."""

    id: str
    now: str  # RQ time format
    maxlen: int  # the events stream's cap
    ttl_ms: int  # the events stream's expiry
    result_ttl: int  # seconds an ended job's hash is kept


class EnqueueArgs(NamedTuple):
    """ENQUEUE and ENQUEUE_BATCH, before the job blocks (``JobBlock`` each)."""

    max_queue: int
    maxlen: int
    ttl_ms: int
    history_min: str  # the oldest history score kept (epoch s)
    history_max: int
    quota: int  # the owner's queued + running jobs allowed (0: none)
    start_ts: str  # RQ time format: the start of a job handed at once to a parked worker
    checks: str  # one character per job: '1' refuse it when no live worker holds its model
    idem: str = ""  # the submit's Idempotency-Key ('': none)
    digest: str = ""  # the digest of the submit's body (with idem)
    idem_ttl: int = 86400  # seconds the key is remembered
    # ENQUEUE: the parked worker the API sent the job to already (the direct link), if parked
    prefer: str = ""


class JobBlock(NamedTuple):
    """One job of ENQUEUE / ENQUEUE_BATCH (``push_job`` in lib.lua)."""

    id: str
    event: str  # the queued event
    deadline: float | str  # epoch s of its queue-wait deadline, 0: none
    model: str
    priority: str
    submitter: str
    created: str  # epoch s (the history's score)
    owner: str  # '': none
    hash: str  # the job hash as one JSON object of strings (far cheaper to send than 2N arguments)


class EnqueueKeys(NamedTuple):
    queue: str  # the model's RQ list


class PopKeys(NamedTuple):
    inflight: str  # then the model queues to try


class PopArgs(NamedTuple):
    worker: str
    now: str  # the worker's clock, RQ time format
    maxlen: int
    ttl_ms: int
    flags: str  # one per model queue, schedule.plan_pop
    cold_delay: float | str  # seconds: one number for every queue, or one per queue, space-separated
    warm_ttl: float
    switch_delay: float | str
    aging: float
    park_slots: int
    park_ttl: float
    seen: str


class EmitArgs(NamedTuple):
    """Then one or more event bodies."""

    id: str
    attempt: str
    worker: str
    maxlen: int
    ttl_ms: int


class FinishKeys(NamedTuple):
    job: str
    inflight: str  # then one histogram hash per timing increment


class FinishArgs(NamedTuple):
    """Then the chunk bodies, then the timing's field and amount per increment."""

    id: str
    attempt: str
    worker: str
    status: str  # RQ's: finished, failed, canceled
    ended_at: str
    result: str
    error: str
    body: str
    maxlen: int
    ttl_ms: int
    result_ttl: int
    metrics: str
    chunks: int


class RequeueKeys(NamedTuple):
    job: str
    inflight: str


class RequeueArgs(NamedTuple):
    id: str
    attempt: str  # '': any
    worker: str  # '': any
    reason: str
    max_attempts: int | str  # '': no limit
    now: str
    maxlen: int
    ttl_ms: int
    result_ttl: int
    counts: str  # '1': this attempt counts towards the limit


class ExpireKeys(NamedTuple):
    job: str
    deadlines: str


class PositionArgs(NamedTuple):
    id: str


class RescueArgs(NamedTuple):
    cursor: int  # the history rank to start at
    step: int  # jobs looked at
    budget: int  # queue list entries the step may walk


class LockKey(NamedTuple):
    lock: str


class LockArgs(NamedTuple):
    token: str


# -- loading ----------------------------------------------------------------------------------------------------------
_SENTINELS = "\x00\x01\x02\x03"
_DEFINES = re.compile(r"^local (?:function (\w+)|([\w, ]+?) =)", re.M)
_COMMENT = re.compile(r"--[^\n]*")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _lua_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | tuple):
        raise TypeError(f"no Lua form for {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "{" + ", ".join(_lua_value(v) for v in value) + "}"
    if not re.fullmatch(r"[\w:|.-]*", value):
        raise ValueError(f"a key name part Lua would need escaped: {value!r}")
    return f"'{value}'"


def _builder(name: str, build: Callable[..., str]) -> str:
    """A function of common.keys as Lua: called with one sentinel per parameter, its result split around them."""
    params = list(inspect.signature(build).parameters)
    parts = re.split(f"([{_SENTINELS}])", build(*_SENTINELS[: len(params)]))
    pieces = [params[_SENTINELS.index(p)] if i % 2 else _lua_value(p) for i, p in enumerate(parts) if p]
    return f"local function {name}({', '.join(params)}) return {' .. '.join(pieces)} end"


def _names() -> list[str]:
    """common.keys' constants and key builders, and the scheduler's constants, as Lua definitions."""
    out = []
    for name, value in vars(keys).items():
        if inspect.isfunction(value) and value.__module__ == keys.__name__:
            out.append(_builder(name, value))
        elif name.isupper() and not name.startswith("_"):
            out.append(f"local {name} = {_lua_value(value)}")
    for name, number in (
        ("STARTS_KEPT", STARTS_KEPT),
        ("PARK_KEEP_MS", PARK_KEEP_MS),
        ("WARM_PARK", WARM_PARK),
    ):
        out.append(f"local {name} = {number}")
    return out


def _layout(key_layout: Layout, arg_layout: Layout, block: Layout | None) -> list[str]:
    """The script's arguments by name, as Lua definitions."""
    key_names, arg_names = key_layout._fields, arg_layout._fields  # type: ignore[attr-defined]
    out = [
        "local KEY = {" + ", ".join(f"{n} = KEYS[{i}]" for i, n in enumerate(key_names, 1)) + "}",
        f"local KEY_REST = {len(key_names) + 1}",
        "local ARG = {" + ", ".join(f"{n} = ARGV[{i}]" for i, n in enumerate(arg_names, 1)) + "}",
        f"local ARG_REST = {len(arg_names) + 1}",
    ]
    if block is not None:
        out.append(f"local JOB_BLOCK = {_lua_value(block._fields)}")  # type: ignore[attr-defined]
    return out


Definition = tuple[frozenset[str], str, frozenset[str]]  # the names it defines, its text, the words it uses


def _definitions(text: str) -> list[Definition]:
    """The top-level definitions of Lua source, one per paragraph."""
    out = []
    for paragraph in text.split("\n\n"):
        names = frozenset(n.strip() for m in _DEFINES.finditer(paragraph) for n in (m[1] or m[2]).split(","))
        if names:
            out.append((names, paragraph.strip("\n"), _words(paragraph)))
    return out


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(_COMMENT.sub("", text)))


def _shake(definitions: list[Definition], body: str) -> str:
    """The definitions ``body`` uses, directly or through another one, in their order: each call of a script
    creates a closure per function it defines (~0.1 us each), so a script carries no helper it does not use. A
    definition uses only those before it (Lua's local scope), so one pass from the last suffices."""
    needed, kept = set(_words(body)), []
    for names, text, words in reversed(definitions):
        if names & needed:
            kept.append(text)
            needed |= words
    return "\n".join(reversed(kept))


@functools.cache
def _shared() -> tuple[list[Definition], list[Definition]]:
    """The definitions before a script's layout (common.keys' names) and after it (lib.lua's helpers)."""
    return _definitions("\n\n".join(_names())), _definitions(read_lua("lib"))


def read_lua(name: str, package: str = "corral.common") -> str:
    """The text of ``lua/<name>.lua`` in ``package``."""
    return importlib.resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def assemble(script: str, key_layout: Layout, arg_layout: Layout, block: Layout | None = None) -> str:
    """A script's full source: its header, the names, layout and helpers it uses, then its body."""
    lines = script.splitlines(keepends=True)
    split = next(
        (i for i, line in enumerate(lines) if line.strip() and not line.startswith("--")), len(lines)
    )
    header, body = "".join(lines[:split]), "".join(lines[split:])
    names, lib = _shared()
    layout = _definitions("\n\n".join(_layout(key_layout, arg_layout, block)))
    return f"{header}{_shake([*names, *layout, *lib], body)}\n\n{body}"


class LuaScript:
    """A script called by EVALSHA through ``execute_command``, loaded again if Redis lost it (a restart).

    redis-py's own Script objects go through a deprecation wrapper that cost ~10% of a worker's CPU per job."""

    def __init__(
        self,
        name: str,
        key_layout: Layout,
        arg_layout: Layout,
        block: Layout | None = None,
        package: str = "corral.common",
    ) -> None:
        self.name = name
        self.key_layout, self.arg_layout = key_layout, arg_layout
        self.source = assemble(read_lua(name, package), key_layout, arg_layout, block)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r}, sha={self.sha[:12]})"

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.execute_command("SCRIPT", "LOAD", self.source)
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def send_now(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA written at once when ``client`` can (the lean client, connected): its reply's future, else None.
        The caller falls back to ``call_async`` on NOSCRIPT, which loads the script."""
        send = getattr(client, "send_now", None)
        return None if send is None else send("EVALSHA", self.sha, len(keys), *keys, *args)

    async def call_async(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.execute_command("SCRIPT", "LOAD", self.source)
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


ENQUEUE = LuaScript("enqueue", EnqueueKeys, EnqueueArgs, JobBlock)
ENQUEUE_BATCH = LuaScript("enqueue_batch", NoKeys, EnqueueArgs, JobBlock)
POP = LuaScript("pop", PopKeys, PopArgs)
EMIT = LuaScript("emit", JobKey, EmitArgs)
FINISH = LuaScript("finish", FinishKeys, FinishArgs)
REQUEUE = LuaScript("requeue", RequeueKeys, RequeueArgs)
CANCEL = LuaScript("cancel", JobKey, EndArgs)
EXPIRE_QUEUED = LuaScript("expire_queued", ExpireKeys, EndArgs)
POSITION = LuaScript("position", NoKeys, PositionArgs)
RELEASE_LOCK = LuaScript("release_lock", LockKey, LockArgs)
RESCUE = LuaScript("rescue", NoKeys, RescueArgs)
