"""API keys over real processes: keys from CORRAL_API_KEYS and from `corral keys create`, the official clients,
tenancy, scopes, the per-key job quota and request rate, revocation, and logs that hold neither keys nor prompts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import redis

from corral import Client
from corral.common.errors import Unauthorized
from corral.simulator import expected_text

from ..conftest import Fleet, own_fleet
from ..support import ROOT, base_env, free_port

pytestmark = pytest.mark.integration
ADMIN_KEY = "env-admin-key-for-the-auth-test-0001"
PROMPT = "zebra quartz 7719 lighthouse"  # distinctive: must never reach a log


@dataclass
class Secured:
    fleet: Fleet
    api: str
    redis: redis.Redis
    keys: dict[str, str] = field(default_factory=dict)

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        client = httpx.Client(base_url=self.api, headers=headers, timeout=30)
        self.fleet.clients.append(client)
        return client


def corral(redis_url: str, *argv: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *argv], env=base_env(redis_url, **settings),
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)  # fmt: skip


def create_key(redis_url: str, *options: str) -> str:
    done = corral(redis_url, "keys", "create", *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    with own_fleet(tmp_path_factory.mktemp("auth")) as (server, fleet):
        keys = {
            "alice": create_key(server.url, "--scope", "submit", "--name", "alice"),
            "bob": create_key(server.url, "--scope", "submit", "--name", "bob"),
            "reader": create_key(server.url, "--scope", "read", "--name", "reader"),
            "quota": create_key(
                server.url, "--scope", "submit", "--name", "quota", "--max-jobs", "1", "--rate", "1000"
            ),
            "slow": create_key(server.url, "--scope", "read", "--name", "slow", "--rate", "0.2"),
        }
        sim = fleet.simulator("llama3:latest,nomic-embed-text:latest")
        fleet.worker(sim, "w-auth", log_level="DEBUG")
        api = fleet.api(api_keys=f"{ADMIN_KEY}:admin", rate_burst=3, log_level="DEBUG")
        yield Secured(fleet, api, fleet.redis, keys)


def test_keys_are_listed_by_id_and_stored_only_hashed(secured: Secured) -> None:
    listing = corral(secured.fleet.redis_url, "keys", "list")
    assert listing.returncode == 0 and "alice" in listing.stdout and "reader" in listing.stdout
    dump = repr({k: secured.redis.dump(k) for k in secured.redis.keys("*")})
    for key in secured.keys.values():
        assert key.startswith("corral_") and key not in listing.stdout and key not in dump


def test_a_key_is_needed_except_for_the_probes(secured: Secured) -> None:
    anonymous = secured.http()
    assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/readyz").status_code == 200
    refused = anonymous.post("/jobs", json={"model": "llama3", "prompt": "hi"})
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert secured.http("corral_not-a-real-key").get("/queues").json()["error"] == "invalid API key"
    assert secured.http(ADMIN_KEY).get("/queues").status_code == 200
    with Client(secured.api) as keyless, pytest.raises(Unauthorized):
        keyless.submit("llama3", "hi")


def test_python_client_with_a_key_runs_a_job(secured: Secured) -> None:
    with Client(secured.api, api_key=secured.keys["alice"]) as corral_client:
        job = corral_client.submit("llama3", PROMPT)
        text = "".join(e.get("text", "") for e in job.stream())
        assert text == expected_text("llama3", PROMPT)
        assert job.result(timeout=30).status == "succeeded"


def test_official_clients_send_their_key(secured: Secured) -> None:
    key = secured.keys["alice"]
    with ollama.Client(host=secured.api, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.generate(model="llama3", prompt="hi").response == expected_text("llama3", "hi")
    with ollama.Client(host=secured.api) as client, pytest.raises(ollama.ResponseError) as refused:
        client.generate(model="llama3", prompt="hi")
    assert refused.value.status_code == 401
    with openai.OpenAI(base_url=secured.api + "/v1", api_key=key, max_retries=0) as ai:
        reply = ai.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
    with (
        openai.OpenAI(base_url=secured.api + "/v1", api_key="wrong", max_retries=0) as ai,
        pytest.raises(openai.AuthenticationError),
    ):
        ai.models.list()


def test_a_job_is_seen_only_by_its_key_and_admins(secured: Secured) -> None:
    alice, bob, reader = (secured.http(secured.keys[n]) for n in ("alice", "bob", "reader"))
    job = alice.post("/jobs", json={"model": "nobody-serves-this", "prompt": "x", "wait": True}).json()
    path = f"/jobs/{job['id']}"
    for other in (bob, reader):
        assert other.get(path).status_code == 404
        assert other.get(path + "/events").status_code == 404
    assert bob.delete(path).status_code == 404
    view = secured.http(ADMIN_KEY).get(path).json()
    assert view["owner"] and view["status"] == "queued"
    assert alice.get(path).json()["owner"] == view["owner"]
    # the history lists a job to its key and to admins only
    assert job["id"] in [j["id"] for j in alice.get("/jobs").json()["jobs"]]
    assert job["id"] in [j["id"] for j in secured.http(ADMIN_KEY).get("/jobs").json()["jobs"]]
    for other in (bob, reader):
        assert job["id"] not in [j["id"] for j in other.get("/jobs").json()["jobs"]]
    assert alice.delete(path).json()["status"] == "cancelled"


def test_scopes(secured: Secured) -> None:
    reader, alice = secured.http(secured.keys["reader"]), secured.http(secured.keys["alice"])
    refused = reader.post("/jobs", json={"model": "llama3", "prompt": "x"})
    assert refused.status_code == 403 and "needs 'submit'" in refused.json()["error"]
    assert reader.get("/workers").status_code == 200
    assert alice.post("/workers/w-auth/drain").status_code == 403
    assert secured.http(ADMIN_KEY).post("/workers/nobody/drain").status_code == 404


def test_concurrent_job_quota(secured: Secured) -> None:
    quota = secured.http(secured.keys["quota"])
    body = {"model": "nobody-serves-this", "prompt": "x", "wait": True}
    first = quota.post("/jobs", json=body)
    assert first.status_code == 202
    second = quota.post("/jobs", json=body)
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    assert "limit" in second.json()["error"]
    dropin = quota.post("/api/generate", json={"model": "llama3", "prompt": "x"})
    assert dropin.status_code == 429 and set(dropin.json()) == {"error"}
    v1 = quota.post("/v1/completions", json={"model": "llama3", "prompt": "x"})
    assert v1.status_code == 429 and v1.json()["error"]["type"] == "rate_limit_error"
    quota.delete(f"/jobs/{first.json()['id']}")
    third = quota.post("/jobs", json=body)
    assert third.status_code == 202
    quota.delete(f"/jobs/{third.json()['id']}")
    # a batch counts every job against the quota, all or nothing
    batch = quota.post("/jobs/batch", json={"jobs": [body, body]})
    assert batch.status_code == 429, batch.text
    assert secured.http(ADMIN_KEY).get("/jobs").status_code == 200


def test_fair_share_counts_a_keys_jobs_as_its_own(secured: Secured) -> None:
    alice, admin = secured.http(secured.keys["alice"]), secured.http(ADMIN_KEY)
    body = {"model": "nobody-serves-this", "prompt": "x", "wait": True, "user": "someone-else"}
    refused = alice.post("/jobs", json=body, headers={"X-Corral-User": "someone-else"})
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"  # only admins name another
    mine = alice.post("/jobs", json={**body, "user": None}).json()
    named = admin.post("/jobs", json=body).json()  # an admin (a gateway) may name the submitter
    own = admin.post("/jobs", json={**body, "user": None}).json()
    submitters = [secured.redis.hget(f"rq:job:{j['id']}", "submitter") for j in (mine, named, own)]
    alice_id = secured.redis.hget(f"rq:job:{mine['id']}", "owner")
    admin_id = secured.redis.hget(f"rq:job:{own['id']}", "owner")
    assert submitters == [alice_id, b"someone-else", admin_id] and alice_id != admin_id
    for job in (mine, named, own):
        admin.delete(f"/jobs/{job['id']}")


def test_request_rate(secured: Secured) -> None:
    slow = secured.http(secured.keys["slow"])
    statuses = [slow.get("/queues").status_code for _ in range(3)]  # the burst (CORRAL_RATE_BURST=3)
    limited = slow.get("/api/tags")
    assert statuses == [200, 200, 200] and limited.status_code == 429, limited.text
    assert 1 <= int(limited.headers["retry-after"]) <= 5 and set(limited.json()) == {"error"}


def test_revoked_key_is_refused_at_once(secured: Secured) -> None:
    key = create_key(secured.fleet.redis_url, "--scope", "read", "--name", "temp")
    client = secured.http(key)
    assert client.get("/queues").status_code == 200
    revoked = corral(secured.fleet.redis_url, "keys", "revoke", "temp")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert client.get("/queues").status_code == 401
    assert corral(secured.fleet.redis_url, "keys", "revoke", "temp").returncode == 2


def test_logs_hold_neither_keys_nor_prompts(secured: Secured) -> None:
    """Runs last in this module: every test above has sent keys and the distinctive prompt (DEBUG logs)."""
    logs = {child.name: child.log() for child in secured.fleet.children if not child.name.startswith("sim")}
    assert any(name.startswith("api") for name in logs) and any(name.startswith("worker") for name in logs)
    for name, text in logs.items():
        assert text, name
        for secret in (ADMIN_KEY, PROMPT, *secured.keys.values()):
            assert secret not in text, f"{name} log holds a secret"


def test_api_without_keys_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: whether keys exist cannot be told
    refused = corral(closed, "api", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 2 and "refusing to bind 0.0.0.0 without API keys" in refused.stderr
