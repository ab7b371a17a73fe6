"""API keys, scopes and rate limits: the pure logic (and the Redis calls of ``corral keys``).

A key is a random secret; Corral keeps only its SHA-256 (keys are 256-bit random strings, so an unsalted fast
hash is enough: there is nothing to brute-force). A key's public **id** is the first 12 hex digits of that hash:
it names the key in job records (``owner``), logs and ``corral keys list`` without revealing it.

Scopes nest: ``read`` ⊂ ``submit`` ⊂ ``admin``. ``read`` reads jobs and the fleet, ``submit`` also creates and
cancels jobs, ``admin`` also drains workers, sees every key's jobs and manages models (pull, delete, copy, create,
load: ``/models`` writes and Ollama's ``/api/pull`` …).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, NamedTuple

from corral.common import keys
from corral.common.errors import CorralError, InvalidRequest
from corral.common.scripts import LuaScript


class Scope(IntEnum):
    READ = 1
    SUBMIT = 2
    ADMIN = 3

    @classmethod
    def parse(cls, word: str) -> Scope:
        try:
            return cls[word.strip().upper()]
        except KeyError:
            raise InvalidRequest(f"unknown scope {word!r}: use read, submit or admin") from None

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id and what it may do. ``rate`` / ``max_jobs`` of None mean the settings'."""

    id: str
    scope: Scope
    name: str = ""
    rate: float | None = None
    max_jobs: int | None = None

    def can(self, needed: Scope) -> bool:
        return self.scope >= needed

    def record(self) -> str:
        """The JSON stored in ``corral-auth:keys`` (never the key itself)."""
        return json.dumps({**asdict(self), "scope": self.scope.word, "created_at": round(time.time())})

    @classmethod
    def from_record(cls, raw: bytes | str) -> Principal:
        data = json.loads(raw)
        return cls(id=str(data["id"]), scope=Scope.parse(data["scope"]), name=str(data.get("name") or ""),
                   rate=data.get("rate"), max_jobs=data.get("max_jobs"))  # fmt: skip


def may_see(principal: Principal, owner: str | None) -> bool:
    """Tenancy: a job is visible to the key that created it, and to admin keys (and to everyone without keys)."""
    return owner is not None and (principal.scope is Scope.ADMIN or owner == principal.id)


def job_quota(principal: Principal, default: int) -> int:
    """How many queued + running jobs this caller may have (0 = no limit; none without keys)."""
    if not principal.id:
        return 0
    return default if principal.max_jobs is None else principal.max_jobs


# Without keys every caller is this one: it may do anything, and its jobs have no owner.
ANONYMOUS = Principal(id="", scope=Scope.ADMIN, name="anonymous")
MIN_KEY_LENGTH = 16


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key_hash: str) -> str:
    return key_hash[:12]


def new_key() -> str:
    return "corral_" + secrets.token_urlsafe(32)


def parse_api_keys(value: str) -> dict[str, Principal]:
    """``CORRAL_API_KEYS``: comma-separated ``KEY[:SCOPE]`` (scope ``submit`` when left out) → hash → principal."""
    out: dict[str, Principal] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, scope = item.partition(":")
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
            raise InvalidRequest(f"CORRAL_API_KEYS: each key needs {MIN_KEY_LENGTH}+ characters, no spaces")
        digest = hash_key(key)
        out[digest] = Principal(key_id(digest), Scope.parse(scope or "submit"), name="env")
    return out


def credential(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY`` (Ollama's and OpenAI's clients) or ``X-API-Key``."""
    given = headers.get("x-api-key")
    if given:
        return given.strip() or None
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


# -- which scope a route needs -----------------------------------------------------------------------------
# the probes, and the dashboard's page itself: static HTML holding no data (it asks for a key to read any)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/dashboard"})
# Request paths (not templates: the check runs before routing, so it covers mounted apps and 404s too), in one
# pattern: it is matched on every request
ADMIN_PATHS = re.compile(
    r"/workers/[^/]+/drain/?|/admin(/.*)?|/hosts(/.*)?|/api/(pull|delete|copy|create|push)/?"
)
# model management changes what every host has: admin for any write under /models (reading it needs ``read``)
ADMIN_WRITE_PREFIX = "/models"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_scope(method: str, path: str) -> Scope | None:
    """The scope a request path needs; None for the public probes. Reads need ``read``, every other method
    ``submit``, the paths in ``ADMIN_PATHS`` and writes under ``/models`` ``admin``."""
    if path in PUBLIC_PATHS:
        return None
    if ADMIN_PATHS.fullmatch(path):
        return Scope.ADMIN
    if method not in READ_METHODS and (
        path == ADMIN_WRITE_PREFIX or path.startswith(ADMIN_WRITE_PREFIX + "/")
    ):
        return Scope.ADMIN
    return Scope.READ if method in READ_METHODS else Scope.SUBMIT


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys_configured: bool, allow_unauthenticated: bool) -> None:
    """Refuse to serve without keys on a non-loopback address unless explicitly allowed."""
    if keys_configured or allow_unauthenticated or is_loopback(host):
        return
    raise CorralError(
        f"refusing to bind {host} without API keys: set CORRAL_API_KEYS or create one with `corral keys create`,"
        " or set CORRAL_ALLOW_UNAUTHENTICATED=true"
    )


# -- rate limit: a token bucket per key, in one atomic script (api/lua/rate.lua) ------------------------------
class RateKey(NamedTuple):
    bucket: str


class RateArgs(NamedTuple):
    rate: str  # tokens per second
    burst: int


RATE = LuaScript("rate", RateKey, RateArgs, package="corral.api")


def rate_arguments(principal: Principal, default_rate: float, burst: int) -> tuple[RateKey, RateArgs] | None:
    """KEYS and ARGV of the RATE script for this caller, or None when it has no rate limit."""
    rate = default_rate if principal.rate is None else principal.rate
    if not principal.id or rate <= 0:
        return None
    return RateKey(bucket=keys.rate_key(principal.id)), RateArgs(rate=repr(float(rate)), burst=burst)


def retry_after(reply: list[Any]) -> float | None:
    """None when the RATE script allowed the request, else the seconds until a token is back."""
    if int(reply[0]) == 1:
        return None
    raw = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
    return max(float(raw), 0.001)


# -- keys stored in Redis (`corral keys …`) ------------------------------------------------------------------
def create_key(client: Any, scope: Scope, name: str = "", rate: float | None = None,
               max_jobs: int | None = None) -> tuple[str, Principal]:  # fmt: skip
    """Store a new key's hash; return the key (shown once, never stored) and its principal."""
    key = new_key()
    digest = hash_key(key)
    principal = Principal(key_id(digest), scope, name=name, rate=rate, max_jobs=max_jobs)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.API_KEYS, digest, principal.record())
    pipe.set(keys.AUTH_REQUIRED, "1")
    pipe.execute()
    return key, principal


def list_keys(client: Any) -> list[dict[str, Any]]:
    rows = [json.loads(raw) for raw in client.hgetall(keys.API_KEYS).values()]
    return sorted(rows, key=lambda r: (r.get("created_at", 0), r["id"]))


def revoke_key(client: Any, id_or_name: str) -> list[str]:
    """Delete the keys whose id or name is ``id_or_name``; return their ids. Keys stay required afterwards."""
    gone = []
    for digest, raw in client.hgetall(keys.API_KEYS).items():
        record = json.loads(raw)
        if id_or_name in (record["id"], record.get("name")):
            client.hdel(keys.API_KEYS, digest)
            gone.append(str(record["id"]))
    return gone
