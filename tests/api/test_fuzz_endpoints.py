"""Fuzz every route of the app (taken from its route table) with Hypothesis: paths, queries, headers (API keys,
``Last-Event-ID``, ``X-Corral-*``, any latin-1 text) and bodies, among them bodies that take the standard library's
fallback parser (integers past 64 bits, lone surrogate escapes, ``NaN``, nesting around the depth limit). No
request may get a 5xx, and no request but an accepted submission may change Redis. Two jobs are there to be read:
one ended, one whose hash is damaged (a result that is not UTF-8 JSON, counts that are not numbers).

``make test`` runs about 2,500 cases; ``FUZZ_SCALE=5`` (``make fuzz``) multiplies them past 10,000.

The app runs in this process (httpx.ASGITransport) against a real redis-server: ~1 ms a request instead of ~5 over
HTTP to a subprocess. No worker runs, so every model is unserved: a submission is refused (404) before it could
start a job, except ``POST /jobs`` with ``"wait": true`` (202, then cancelled and removed here).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.api import create_app
from corral.api.routes.jobs import MAX_SEQ
from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.settings import Settings

from ..inprocess import API_KEYS, KEYS, InProcessAPI, fill, routes, snapshot
from ..support import free_port

pytestmark = pytest.mark.integration
WRITE_METHODS = ("POST", "DELETE")
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
EXAMPLES_WRITES = int(140 * SCALE)  # per route; the routes that read a body get the most
EXAMPLES_OTHER = int(30 * SCALE)
ENDED, DAMAGED = "e" * 32, "d" * 32  # admin keys see them (no owner)
COUNTS = {"cases": 0, "5xx": 0, "accepted": 0}
STATUSES: Counter[int] = Counter()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessAPI, redis.Redis]]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("fuzz") / "redis").start()
    client = redis.Redis.from_url(server.url)
    app = InProcessAPI(Settings(redis_url=server.url, api_keys=API_KEYS, rate_limit=0,  # type: ignore[arg-type]
                                janitor_interval=3600, max_messages=8, max_image_bytes=64))  # fmt: skip
    try:
        plant_jobs(client)
        yield app, client
    finally:
        app.close()
        client.close()
        server.kill()


def plant_jobs(client: redis.Redis) -> None:
    """The two jobs to read: each ends with an event at ``MAX_SEQ``, so that following it from any seq the events
    route takes ends at once (a resume past a job's last event waits for more)."""
    common = {
        "status": "finished",
        "model": "llama3:latest",
        "kind": "generate",
        "owner": "",
        "seq": MAX_SEQ + 1,
    }
    client.hset(keys.job_key(ENDED), mapping={**common, "result": '{"text":"hi"}', "metrics": '{"ttft":0.1}'})
    damage = {
        "result": b'{"text":"\xff"}',
        "metrics": b"\xfe",
        "attempt": b"\xff",
        "error": b"\xffx",
        "priority": "x",
    }
    client.hset(keys.job_key(DAMAGED), mapping={**common, **damage})
    for job_id in (ENDED, DAMAGED):
        done = json.dumps({"type": "done", "seq": MAX_SEQ, "id": job_id, "attempt": 1})
        client.xadd(keys.events_key(job_id), {"e": done}, id=f"{MAX_SEQ + 1}-0")
        client.zadd(keys.HISTORY, {job_id: 1e9})
        client.lpush(keys.RECENT_JOBS, job_id)


ROUTES = routes(create_app(Settings()))
printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | printable
)
json_values = st.recursive(
    scalars | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=6,
)
images = st.lists(st.sampled_from(["aGk=", "QUJDRA==", "not base64!", "http://127.0.0.1:9/x.png", "", "A" * 200])
                  | printable, max_size=3)  # fmt: skip
options = st.dictionaries(
    st.sampled_from(["temperature", "num_ctx", "stop", "seed", "top_p", "use_mmap", "bogus"]) | printable,
    json_values,
    max_size=4,
)
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "audio"]) | json_values},
    optional={"text": json_values, "image_url": json_values | st.fixed_dictionaries(
        {"url": st.sampled_from(["data:image/png;base64,aGk=", "http://127.0.0.1:9/a.png", "data:x"]) | json_values})},
)  # fmt: skip
roles = st.sampled_from(["user", "system", "assistant", "tool"])
# a message whose odd parts are always there (tool calls, content parts, images): where translation bugs hide
odd_message = st.fixed_dictionaries({
    "role": roles, "content": st.lists(part, max_size=3) | json_values, "images": images | json_values,
    "tool_calls": st.lists(st.fixed_dictionaries({"function": json_values}) | json_values, max_size=2) | json_values,
})  # fmt: skip
message = st.fixed_dictionaries(
    {"role": roles | roles | st.sampled_from(["wizard", ""]) | json_values},
    optional={
        "content": printable | st.lists(part, max_size=3) | json_values,
        "images": images | json_values,
        "tool_calls": st.lists(st.fixed_dictionaries({"function": json_values}), max_size=2) | json_values,
        "thinking": json_values,
    },
)
good_models = st.sampled_from(["llama3", "llama3:latest", "nomic-embed-text", "a/b/c:d"])
bad_models = st.sampled_from(["bad name!", "", "x" * 300, "a/b/c/d:e"]) | json_values
models = good_models | good_models | bad_models
fields = {
    "model": models, "name": models, "prompt": printable | json_values, "system": json_values,
    "messages": st.lists(message, max_size=10) | json_values, "input": json_values, "options": options | json_values,
    "images": images | json_values, "kind": st.sampled_from(["generate", "chat", "embed", "show", "x"]),
    "format": json_values, "stream": st.booleans() | json_values, "wait": st.booleans(), "timeout": json_values,
    "max_tokens": json_values, "stop": json_values, "tools": json_values, "response_format": json_values,
    "stream_options": json_values, "dimensions": json_values, "keep_alive": json_values, "think": json_values,
    "temperature": json_values, "suffix": json_values, "reasoning_effort": json_values, "queue_timeout": json_values,
}  # fmt: skip
# mostly well-formed bodies with a few odd fields (what reaches the translation code), then anything at all
bodies = (
    st.fixed_dictionaries(
        {"model": good_models, "messages": st.lists(message | odd_message, min_size=1, max_size=4)},
        optional={k: v for k, v in fields.items() if k not in ("model", "messages")},
    )
    | st.fixed_dictionaries({"model": models}, optional={k: v for k, v in fields.items() if k != "model"})
    | st.fixed_dictionaries({}, optional=fields)
    | json_values
)
raw_bodies = st.sampled_from(
    [b"", b"{", b"null", b"[]", b'{"model": NaN}', b"\xff\xfe", b'{"model":"llama3"', b"\xef\xbb\xbf{}",
     b'{"model":"llama3","prompt":"\\ud800"}', b'{"model":"llama3","prompt":"x","timeout":1e999}',
     b'{"model":"llama3","prompt":"x","options":{"seed":-Infinity}}', b"[" * 1025 + b"]" * 1025]
) | st.binary(max_size=40)  # fmt: skip
# what the standard library parses (orjson refuses it): text with lone surrogates, integers past 64 bits, nesting
# near and past the depth limit (a marker, spliced in after json.dumps, which cannot write 5,000 levels)
odd_text = st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=8)
long_ints = st.integers(min_value=2**63, max_value=10**40) | st.integers(
    max_value=-(2**63) - 1, min_value=-(10**40)
)
deep = st.sampled_from([2, 500, 510, 511, 512, 513, 1024, 1025, 5000]).flatmap(
    lambda depth: st.sampled_from([f"@@deep-list-{depth}@@", f"@@deep-dict-{depth}@@"])
)
odd = odd_text | long_ints | deep | json_values
odd_messages = st.lists(
    st.fixed_dictionaries({"role": roles, "content": odd_text | odd}), min_size=1, max_size=3
)
odd_options = st.fixed_dictionaries({}, optional={"seed": long_ints | odd, "temperature": odd, "stop": odd})
fallback_bodies = st.fixed_dictionaries(
    {"model": good_models | odd_text, "prompt": odd_text | long_ints},
    optional={"messages": odd_messages, "input": odd_text | st.lists(odd_text, max_size=3), "format": deep | odd,
              "options": odd_options | odd, "system": odd_text, "tools": odd, "wait": st.booleans(), "x": odd},
)  # fmt: skip


def splice_deep(text: str) -> bytes:
    """``json.dumps`` output with each deep-nesting marker replaced by that many levels."""
    for kind, open_, close in (("list", "[", "]"), ("dict", '{"a":', "}")):
        while f'"@@deep-{kind}-' in text:
            head, _, rest = text.partition(f'"@@deep-{kind}-')
            depth, _, tail = rest.partition('@@"')
            text = head + open_ * int(depth) + ("1" if kind == "dict" else "") + close * int(depth) + tail
    return text.encode()


# mostly valid keys, so that most cases get past the authentication to the handlers
ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}
SUBMIT = {"X-API-Key": KEYS["submit"]}
READ = {"Authorization": f"Bearer {KEYS['read']}"}
BAD = [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer"},
       {"X-API-Key": ""}, {"Authorization": "bearer  " + KEYS["admin"] + "x"}]  # fmt: skip
# header values: any latin-1 text (what HTTP carries), sent as bytes
latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60).map(
    lambda t: t.encode("latin-1")
)
junk_auth = st.one_of(
    st.fixed_dictionaries({"Authorization": latin1 | st.builds(lambda t: b"Bearer " + t, latin1)}),
    st.fixed_dictionaries({"X-API-Key": latin1}),
    st.fixed_dictionaries({"Authorization": st.sampled_from([f"Bearer {k}\t" for k in KEYS.values()])}),
)
auth = st.integers(0, 9).flatmap(
    lambda i: junk_auth if i == 0 else st.sampled_from([ADMIN] * 8 + [SUBMIT] * 6 + [READ] + BAD)
)
ids = st.sampled_from([ENDED, DAMAGED] * 3 + ["0" * 32, "f" * 64, "..", "nope", "%2e%2e"]) | st.text(
    max_size=40
)
seqs = (
    st.integers(-3, 3).map(str)
    | st.integers(min_value=-10, max_value=2**70).map(str)
    | st.sampled_from(
        [
            "",
            " 5",
            "5 ",
            "+3",
            "\u0663",
            "1_0",
            "0x10",
            "-0",
            "-1",
            str(MAX_SEQ),
            str(MAX_SEQ - 1),
            str(2**64),
        ]
    )
)
headers = st.fixed_dictionaries({}, optional={
    "Last-Event-ID": st.one_of(seqs.map(str.encode), seqs.map(str.encode), printable, latin1),
    "Accept": st.sampled_from(["application/x-ndjson", "text/event-stream", "*/*"]) | latin1,
    "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]) | latin1,
    "X-Corral-Priority": st.sampled_from(["high", "normal", "low", ""]) | latin1,
    "X-Corral-User": st.sampled_from(["alice", "a|b", "a b", "x" * 200]) | latin1,
    "X-Corral-Job": latin1,
})  # fmt: skip


def requests(method: str) -> st.SearchStrategy[dict[str, Any]]:
    """Requests for one method: bodies only where the routes read them (generating them costs the most)."""
    fallback = fallback_bodies.map(lambda b: splice_deep(json.dumps(b)))
    plain = bodies.map(lambda b: json.dumps(b).encode())
    body = st.one_of(plain, raw_bodies, fallback, fallback) if method in ("POST", "DELETE") else st.just(b"")
    return st.fixed_dictionaries({
    "auth": auth,
    "params": st.fixed_dictionaries({}, optional={"job_id": ids, "worker_id": ids, "model": ids}),
    "query": st.dictionaries(st.sampled_from(["from", "x", "stream", "limit", "since", "cursor", "status"]),
                             printable | seqs, max_size=2),
    "headers": headers,
    "body": body,
})  # fmt: skip


STRATEGIES = {method: requests(method) for method in {m for m, _ in ROUTES}}


def settle(client: redis.Redis, app: InProcessAPI, answer: dict[str, Any]) -> None:
    """Cancel an accepted job and remove it, so that the database stays small."""
    job_id = answer["id"]
    app.request("DELETE", f"/jobs/{job_id}", headers={"X-API-Key": KEYS["admin"]})
    client.delete(keys.job_key(job_id), keys.events_key(job_id))


def no_wait_stream(body: bytes) -> bytes:
    """``stream`` + ``wait`` on /jobs would follow a job no worker will ever run: keep one of the two."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if isinstance(data, dict) and data.get("stream") and data.get("wait"):
        data["wait"] = False
        return json.dumps(data).encode()
    return body


def run_case(api: tuple[InProcessAPI, redis.Redis], method: str, template: str, data: st.DataObject) -> None:
    app, client = api
    case = data.draw(STRATEGIES[method])
    path = fill(template, {k: quote(v, safe="") for k, v in case["params"].items()})
    body = no_wait_stream(case["body"]) if template == "/jobs" else case["body"]
    before = snapshot(client)
    response = app.request(method, path, params=case["query"], content=body if method in ("POST", "DELETE") else None,
                           headers={**case["headers"], **case["auth"]})  # fmt: skip
    COUNTS["cases"] += 1
    STATUSES[response.status_code] += 1
    if response.status_code >= 500:
        COUNTS["5xx"] += 1
    assert response.status_code < 500, (method, path, body[:300], response.text[:500])
    if method == "POST" and template == "/jobs" and response.status_code == 202:
        COUNTS["accepted"] += 1
        settle(client, app, response.json())
        return
    assert snapshot(client) == before, (method, path, response.status_code, body[:300])


WRITES = [(m, t) for m, t in ROUTES if m in WRITE_METHODS]
READS = [(m, t) for m, t in ROUTES if m not in WRITE_METHODS]
FUZZ_SETTINGS = {"deadline": None, "database": None,
                 "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}  # fmt: skip


@pytest.mark.parametrize(("method", "template"), WRITES)
@settings(max_examples=EXAMPLES_WRITES, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_fuzzed_writes_never_5xx_nor_write_when_refused(
    api: tuple[InProcessAPI, redis.Redis], method: str, template: str, data: st.DataObject
) -> None:
    run_case(api, method, template, data)


@pytest.mark.parametrize(("method", "template"), READS)
@settings(max_examples=EXAMPLES_OTHER, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_fuzzed_reads_never_5xx_nor_write(
    api: tuple[InProcessAPI, redis.Redis], method: str, template: str, data: st.DataObject
) -> None:
    run_case(api, method, template, data)


def test_fuzz_totals(record_property: Any, tmp_path: Path) -> None:
    """The numbers for the closing note: printed (``-s``) and recorded in the JUnit properties."""
    record_property("fuzz_cases", COUNTS["cases"])
    record_property("fuzz_5xx", COUNTS["5xx"])
    print(f"\nfuzz: {COUNTS['cases']} requests over {len(ROUTES)} routes, {COUNTS['5xx']} 5xx, "
          f"{COUNTS['accepted']} accepted submissions")  # fmt: skip
    print("statuses: " + ", ".join(f"{k}: {n}" for k, n in sorted(STATUSES.items())))
    planned = len(WRITES) * EXAMPLES_WRITES + len(READS) * EXAMPLES_OTHER
    assert COUNTS["cases"] >= planned * 0.9 and COUNTS["5xx"] == 0
