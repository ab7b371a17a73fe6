"""The pure logic of API keys, scopes, bind checks and Ollama options."""

from __future__ import annotations

import pytest

from corral.api.apikeys import (
    ANONYMOUS,
    Principal,
    Scope,
    check_bind,
    credential,
    hash_key,
    job_quota,
    key_id,
    may_see,
    parse_api_keys,
    required_scope,
)
from corral.common.errors import CorralError, InvalidRequest
from corral.common.inputs import check_options

pytestmark = pytest.mark.unit


def test_parse_api_keys() -> None:
    parsed = parse_api_keys(" first-key-0123456789:admin, second-key-0123456789 ,,third-key-0123456789:read")
    scopes = sorted(p.scope.word for p in parsed.values())
    assert scopes == ["admin", "read", "submit"]  # submit when left out
    digest = hash_key("first-key-0123456789")
    assert parsed[digest].id == key_id(digest) == digest[:12] and "first-key" not in repr(parsed)
    for bad in ("short:admin", "a-long-enough-key-00:owner", "has space in it 0123456"):
        with pytest.raises(InvalidRequest):
            parse_api_keys(bad)


def test_credential_from_either_header() -> None:
    assert credential({"authorization": "Bearer abc"}) == "abc"
    assert credential({"authorization": "bearer   abc "}) == "abc"
    assert credential({"x-api-key": "k", "authorization": "Bearer other"}) == "k"
    assert credential({"authorization": "Basic eDp5"}) is None
    assert credential({"authorization": "Bearer"}) is None and credential({}) is None


def test_scopes_of_paths() -> None:
    assert required_scope("GET", "/healthz") is None and required_scope("GET", "/readyz") is None
    assert required_scope("GET", "/jobs/abc") is Scope.READ
    assert (
        required_scope("POST", "/jobs") is Scope.SUBMIT
        and required_scope("DELETE", "/jobs/x") is Scope.SUBMIT
    )
    assert required_scope("POST", "/workers/w1/drain") is Scope.ADMIN
    assert (
        required_scope("GET", "/admin/keys") is Scope.ADMIN and required_scope("GET", "/nope") is Scope.READ
    )


def test_tenancy_and_quota() -> None:
    alice = Principal("a" * 12, Scope.SUBMIT)
    admin = Principal("b" * 12, Scope.ADMIN, max_jobs=5)
    assert may_see(alice, alice.id) and not may_see(alice, "c" * 12) and not may_see(alice, "")
    assert may_see(admin, alice.id) and may_see(ANONYMOUS, "") and not may_see(admin, None)
    assert job_quota(alice, 10) == 10 and job_quota(admin, 10) == 5 and job_quota(ANONYMOUS, 10) == 0
    assert Principal.from_record(alice.record()) == alice


def test_bind_checks() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, keys_configured=False, allow_unauthenticated=False)
    check_bind("0.0.0.0", keys_configured=True, allow_unauthenticated=False)
    check_bind("0.0.0.0", keys_configured=False, allow_unauthenticated=True)
    with pytest.raises(CorralError, match="refusing to bind"):
        check_bind("10.0.0.5", keys_configured=False, allow_unauthenticated=False)


def test_options() -> None:
    assert check_options({"stop": "x", "num_ctx": 8, "top_p": 1}) == {"stop": ["x"], "num_ctx": 8, "top_p": 1}
    for bad in ({"seed": 1.5}, {"seed": True}, {"stop": [1]}, {"temperature": "hot"}, {"num_gpu": 2**40},
                {"evil": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            check_options(bad)
