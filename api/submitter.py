"""Who a job is for and how urgent it is, from the request's headers (fields in the body win).

With API keys, fair share is per key: ``attribute`` makes a key's id the submitter of its jobs. Only an admin
key, such as a gateway acting for its users, may name another submitter; any other key that does is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from corral.common.errors import Forbidden, InvalidRequest
from corral.common.jobs import Idempotency
from corral.common.keys import PRIORITIES
from corral.common.schemas import SUBMITTER_PATTERN, JobRequest

from .apikeys import Principal, Scope

PRIORITY_HEADER = "x-corral-priority"
USER_HEADER = "x-corral-user"
IDEMPOTENCY_HEADER = "idempotency-key"
_SUBMITTER = re.compile(SUBMITTER_PATTERN)
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII


def submitter_of(headers: Mapping[str, str]) -> str | None:
    """The submitter a request names in ``X-Corral-User`` (None: anonymous, unless the body names one)."""
    value = headers.get(USER_HEADER)
    if value is None:
        return None
    if not _SUBMITTER.match(value):
        raise InvalidRequest("X-Corral-User must be 1-128 characters without spaces or '|'")
    return value


def priority_of(headers: Mapping[str, str]) -> str | None:
    value = headers.get(PRIORITY_HEADER)
    if value is None:
        return None
    value = value.strip().lower()
    if value not in PRIORITIES:
        raise InvalidRequest("X-Corral-Priority must be high, normal or low")
    return value


def header_fields(headers: Mapping[str, str]) -> dict[str, Any]:
    """The scheduling fields the headers give, for a body that does not set them."""
    fields: dict[str, Any] = {}
    if (priority := priority_of(headers)) is not None:
        fields["priority"] = priority
    if (submitter := submitter_of(headers)) is not None:
        fields["submitter"] = submitter
    return fields


def apply_headers(request: JobRequest, headers: Mapping[str, str]) -> JobRequest:
    """Fill ``priority`` and ``submitter`` from the headers where the body left them unset."""
    fields = header_fields(headers)
    if "priority" in fields and "priority" not in request.model_fields_set:
        request.priority = fields["priority"]
    if "submitter" in fields and request.submitter is None:
        request.submitter = fields["submitter"]
    return request


def attribute(request: JobRequest, principal: Principal) -> JobRequest:
    """The submitter fair share counts: the caller's key id, or for an admin key the submitter the request names.
    A non-admin key naming another submitter (``submitter``/``user``, ``X-Corral-User``) is ``Forbidden``: it
    could otherwise spend someone else's fair share. Without keys the request's own submitter stands."""
    if not principal.id or (principal.scope is Scope.ADMIN and request.submitter is not None):
        return request
    if request.submitter not in (None, principal.id):
        raise Forbidden(f"only an admin key may name another submitter; this key submits as {principal.id}")
    request.submitter = principal.id
    return request


def idempotency_of(headers: Mapping[str, str], requests: list[JobRequest]) -> Idempotency | None:
    """The submit's ``Idempotency-Key`` with the digest of its validated (and attributed) requests; None without
    the header."""
    value = headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidRequest("Idempotency-Key must be 1-255 visible ASCII characters (no spaces)")
    return Idempotency.of(value, requests)
