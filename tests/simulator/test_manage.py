"""The simulator's model management: pull progress paced by the download rate, a resumed pull, a full disk,
unknown models, delete, copy and create, as Ollama answers them."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from corral.simulator import ModelSpec, SimConfig, build_app

pytestmark = pytest.mark.unit
GIB = 2**30


def client(**config: object) -> TestClient:
    sim = SimConfig(models=[ModelSpec(name="llama3:latest", size_gb=1)], time_scale=0, **config)  # type: ignore[arg-type]
    return TestClient(build_app(sim))


def lines(response: object) -> list[dict[str, object]]:
    return [json.loads(x) for x in response.text.splitlines()]  # type: ignore[attr-defined]


def test_pull_streams_ollama_progress_at_the_download_rate() -> None:
    with client(pull_rate_mbps=1024, pull_size_gb=1) as c:
        out = lines(c.post("/api/pull", json={"model": "phi3"}))
        assert out[0] == {"status": "pulling manifest"}
        layers = [x for x in out if "digest" in x]
        assert len(layers) == 12  # 1 GiB at 1 GiB/s: the first at 0, a line per 0.1 s, the rounding remainder
        assert [x["completed"] for x in layers][:3] == [0, 107374182, 214748364]
        assert layers[-1]["completed"] == layers[-1]["total"] == GIB
        assert str(layers[0]["status"]).startswith("pulling ") and str(layers[0]["digest"]).startswith(
            "sha256:"
        )
        assert [x["status"] for x in out[-4:]] == ["verifying sha256 digest", "writing manifest",
                                                  "removing any unused layers", "success"]  # fmt: skip
        assert "phi3:latest" in c.get("/sim/stats").json()["disk"]
        assert c.post("/api/pull", json={"model": "phi3", "stream": False}).json() == {"status": "success"}


def test_unknown_model_and_full_disk_fail_as_ollama_does() -> None:
    with client(registry={"phi3:latest": 2.0}, disk_gb=2.5) as c:
        out = lines(c.post("/api/pull", json={"model": "nope"}))
        assert out == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
        whole = c.post("/api/pull", json={"model": "nope", "stream": False})
        assert whole.status_code == 500 and "file does not exist" in whole.json()["error"]
        full = lines(c.post("/api/pull", json={"model": "phi3"}))
        assert "no space left on device" in str(full[-1]["error"])


def test_a_pull_cut_short_resumes_where_it_stopped() -> None:
    with client(pull_rate_mbps=1024, pull_size_gb=1) as c:
        downloads = c.app.state.sim  # type: ignore[attr-defined]
        with c.stream("POST", "/api/pull", json={"model": "phi3"}) as response:
            for raw in response.iter_lines():
                if json.loads(raw).get("completed", 0) > GIB // 2:
                    break
        assert "phi3:latest" not in downloads.disk
        first = next(x for x in lines(c.post("/api/pull", json={"model": "phi3"})) if "digest" in x)
        assert int(first["completed"]) > GIB // 2  # type: ignore[call-overload]


def test_delete_copy_and_create() -> None:
    with client() as c:
        assert c.post("/api/copy", json={"source": "llama3", "destination": "mine"}).status_code == 200
        assert c.post("/api/copy", json={"source": "nope", "destination": "x"}).status_code == 404
        created = lines(c.post("/api/create", json={"model": "made", "from": "mine"}))
        assert created[-1] == {"status": "success"}
        assert c.post("/api/create", json={"model": "x", "from": "nope"}).json() == {
            "error": "model 'nope' not found"
        }
        assert {"mine:latest", "made:latest"} <= set(c.get("/sim/stats").json()["disk"])
        assert c.request("DELETE", "/api/delete", json={"model": "mine"}).status_code == 200
        gone = c.request("DELETE", "/api/delete", json={"model": "mine"})
        assert gone.status_code == 404 and gone.json() == {"error": "model 'mine:latest' not found"}
