"""A real engine killed in the middle of a stream: the job runs again on a second engine serving the same model, and
its reader sees one ``retry`` and then the whole text."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ..support import wait_for
from .conftest import EngineStack, engine_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineStack]:
    """Two engines serving the same tiny model (the same weights: the same greedy text) as "tiny"."""
    with engine_stack(tmp_path_factory.mktemp("twins")) as stack:
        stack.add_engines({"alias": "tiny", "worker": "a"}, {"alias": "tiny", "worker": "b"})
        yield stack


def test_engine_killed_mid_stream_job_reruns_on_the_other(twins: EngineStack) -> None:
    n = 800  # ~8 s streamed: still running when its engine dies
    body = {"model": "tiny", "prompt": "survive", "options": {"num_predict": n, "temperature": 0, "seed": 7}}
    job_id = twins.http.post("/jobs", json=body).json()["id"]
    wait_for(lambda: twins.http.get(f"/jobs/{job_id}").json()["events"] > 5, what="job streaming")
    first = next(
        w for w in ("a", "b") if job_id.encode() in twins.fleet.redis.lrange(f"corral:inflight:{w}", 0, -1)
    )
    other = "b" if first == "a" else "a"
    twins.engines[first].kill()
    view = twins.finished(job_id, timeout=60)
    assert view["status"] == "succeeded" and view["worker"] == other, view
    direct = twins.direct(other).post("/v1/completions", json={"model": "tiny", "prompt": "survive", "max_tokens": n,
                                                              "temperature": 0, "seed": 7}).json()  # fmt: skip
    expected = direct["choices"][0]["text"]
    assert view["text"] == expected and view["final"]["eval_count"] == n
    lines = twins.http.get(
        f"/jobs/{job_id}/events", headers={"Accept": "application/x-ndjson"}
    ).text.splitlines()
    events = [json.loads(line) for line in lines]
    types = [e["type"] for e in events]
    assert types.count("retry") == 1 and types.count("done") == 1
    after = events[types.index("retry") :]
    assert "".join(e["text"] for e in after if e["type"] == "chunk") == expected
    before = "".join(e["text"] for e in events[: types.index("retry")] if e["type"] == "chunk")
    assert before and expected.startswith(before)  # the dead engine had sent the same text, as far as it got
