"""The scheduling benchmark's own logic: the baselines' host choice, the workloads, and how an answer is judged."""

from __future__ import annotations

import json

import pytest

from bench.proxy import Balancer
from bench.scheduling import first_token, same_model
from bench.workloads import AFFINITY, SPREAD

pytestmark = pytest.mark.unit


def test_least_busy_counts_a_request_when_it_picks_its_host_so_a_burst_spreads() -> None:
    balancer = Balancer(["a", "b", "c"], "least-busy")
    picked = [balancer.choose("m") for _ in range(6)]  # six arrive before any answer starts
    assert sorted(picked) == ["a", "a", "b", "b", "c", "c"]
    balancer.release("b")
    assert balancer.choose("m") == "b"


def test_static_sends_each_model_to_its_host_and_round_robin_cycles() -> None:
    static = Balancer(["a", "b", "c"], "static", {"m1": 2, "m2": 0})
    assert [static.choose(m) for m in ("m1", "m2", "m1")] == ["c", "a", "c"]
    rr = Balancer(["a", "b"], "round-robin")
    assert [rr.choose("m") for _ in range(3)] == ["a", "b", "a"]


def test_the_static_map_fills_every_host_up_to_its_room_most_popular_model_first() -> None:
    for work in (AFFINITY, SPREAD):
        assign = work.static_assignment()
        assert sorted(assign) == sorted(work.models)
        per_host = [list(assign.values()).count(h) for h in range(3)]
        assert max(per_host) <= work.sim_options["max_loaded"]
    assert AFFINITY.static_assignment()[AFFINITY.models[0]] == 2  # the most popular model on the fastest host


def test_the_workloads_are_the_same_requests_for_every_dispatcher() -> None:
    a, b = AFFINITY.requests(300), AFFINITY.requests(300)
    assert a == b and len(a) == 300 and a == sorted(a, key=lambda r: r.at)
    uniform = SPREAD.requests(4000)
    counts = [sum(r.model == m for r in uniform) for m in SPREAD.models]
    assert min(counts) > 900  # uniform over four models
    zipf = [sum(r.model == m for r in a) for m in AFFINITY.models]
    assert zipf[0] > 2 * zipf[-1]


def test_an_answer_from_another_model_is_told_apart_from_naming_differences() -> None:
    assert same_model("bench-m0:latest", "bench-m0:latest")
    assert same_model("bench-m0:latest", "ollama/bench-m0:latest")
    assert same_model("bench-m0:latest", "bench-m0")
    assert same_model("bench-m0:latest", "")  # a line that names no model
    assert not same_model("bench-m0:latest", "bench-m3:latest")


def test_first_output_is_read_from_both_streaming_apis() -> None:
    assert first_token("ollama", json.dumps({"model": "m", "response": "hi"})) == (True, "m")
    assert first_token("ollama", json.dumps({"model": "m", "response": ""})) == (False, "m")
    chunk = {"model": "m", "choices": [{"delta": {"content": "hi"}}]}
    assert first_token("openai", "data: " + json.dumps(chunk)) == (True, "m")
    assert first_token("openai", "data: [DONE]") == (False, "")
    with pytest.raises(RuntimeError):
        first_token("ollama", json.dumps({"error": "model not found"}))
