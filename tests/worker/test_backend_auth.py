"""Protected and remote backends: `corral worker --check` verdicts, TLS with a self-signed certificate (made
here), a bearer token the simulator requires, and secrets that never reach a log."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from corral.common.settings import Settings
from corral.simulator import expected_text
from corral.worker.check import check

from ..conftest import Fleet
from ..support import ROOT, base_env, free_port, wait_for

pytestmark = pytest.mark.integration
TOKEN = "s3cret-t0ken-do-not-log"


def self_signed(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral-test")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return str(cert_path), str(key_path)


def run_check(**settings: Any) -> tuple[int, str]:
    """`corral worker --check`, in this process (what the command runs; one test runs the real command)."""
    lines: list[str] = []
    code = check(Settings(**settings), lambda ok, text: lines.append(f"{'✓' if ok else '✗'} {text}"))
    return code, "\n".join(lines)


def run_check_command(**settings: Any) -> tuple[int, str]:
    env = base_env("redis://127.0.0.1:1/0", **settings)
    done = subprocess.run([sys.executable, "-m", "corral", "worker", "--check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_check_verdicts(fleet: Fleet) -> None:
    code, out = run_check_command(ollama_url=f"http://127.0.0.1:{free_port()}")
    assert code == 4 and "✗ reachable: ollama at" in out and "backend unreachable" in out, out
    empty = fleet.simulator(models="", ttft=0.0)
    code, out = run_check(ollama_url=empty)
    assert code == 6 and "✓ reachable" in out and "✗ models: none" in out, out
    embed_only = fleet.simulator(models="nomic-embed-text")
    code, out = run_check(ollama_url=embed_only)
    assert code == 7 and "✗ generation: nomic-embed-text:latest:" in out, out
    good = fleet.simulator(models="llama3:latest,nomic-embed-text")
    code, out = run_check(ollama_url=good)
    assert code == 0, out
    assert "✓ models: llama3:latest, nomic-embed-text:latest" in out
    assert "✓ generation: llama3:latest, 1 token(s) in" in out
    wrong_api = fleet.simulator(models="llama3", flavor="openai")
    code, out = run_check(ollama_url=wrong_api)  # an OpenAI server read as Ollama: /api/tags is not there
    assert code == 4, out


def test_tls_verification_on_off_and_ca_bundle(fleet: Fleet, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sim = fleet.simulator(models="llama3", tls_cert=cert, tls_key=key).replace("http://", "https://")
    code, out = run_check(ollama_url=sim)
    assert code == 4 and "certificate verify failed" in out.lower(), out
    assert run_check(ollama_url=sim, backend_verify=cert)[0] == 0
    assert run_check(ollama_url=sim, backend_verify="false")[0] == 0
    code, out = run_check_command(ollama_url=sim, backend_verify=str(tmp_path / "missing.pem"))
    assert code == 2 and "CORRAL_BACKEND_VERIFY" in out and "CA bundle" in out, out


def test_bearer_token_rejected_without_accepted_with_never_logged(fleet: Fleet, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    fleet.simulator(models="llama3", flavor="openai", token=TOKEN, tls_cert=cert, tls_key=key, port=port)
    url = f"https://127.0.0.1:{port}/v1"
    code, out = run_check(backend_url=url, backend_verify=cert)
    assert code == 5 and "✗ auth: refused (401)" in out and "authentication refused" in out, out
    code, out = run_check(backend_url=url, backend_verify=cert, backend_token=TOKEN)
    assert code == 0 and "✓ auth: accepted" in out and TOKEN not in out, out
    headers = '{"Authorization": "Bearer ' + TOKEN + '", "X-Extra": "1"}'
    assert run_check(backend_url=url, backend_verify=cert, backend_headers=headers)[0] == 0

    refused = fleet.worker("http://127.0.0.1:1", "no-token", wait_ready=False, backend_url=url,
                           backend_verify=cert, log_level="DEBUG")  # fmt: skip
    wait_for(lambda: "authentication refused" in refused.log(), what="worker to log the refusal")
    assert fleet.redis.hget("corral:worker:no-token", "healthy") == b"0"
    worker = fleet.worker("http://127.0.0.1:1", "with-token", backend_url=url, backend_verify=cert,
                          backend_token=TOKEN, backend_headers="X-Extra=" + TOKEN, log_level="DEBUG")  # fmt: skip
    api = fleet.http(fleet.api())
    job = api.post("/jobs", json={"model": "llama3", "prompt": "secret handshake"}).json()
    view = wait_for(lambda: (v := api.get(f"/jobs/{job['id']}").json())["status"] == "succeeded" and v,
                    what="job on the protected backend")  # fmt: skip
    assert view["worker"] == "with-token" and view["text"] == expected_text("llama3", "secret handshake")
    assert fleet.redis.hget("corral:worker:with-token", "backend") == b"openai"
    for child in (refused, worker):
        assert TOKEN not in child.log(), f"{child.name} logged the token"
