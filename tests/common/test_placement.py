"""Placement of model operations: every host, named hosts, replicas by what they have, load and free memory."""

from __future__ import annotations

import pytest

from corral.common.errors import InvalidRequest, ModelNotFound
from corral.common.placement import HostView, Placement, host_views, place

pytestmark = pytest.mark.unit
GIB = 2**30


def hosts() -> list[HostView]:
    return [
        HostView("a", models=frozenset({"llama3:latest"}), busy=0.5, free_memory=8 * GIB),
        HostView("b", busy=0.0, free_memory=4 * GIB),
        HostView("c", busy=0.0, free_memory=16 * GIB),
        HostView("d", usable=False, free_memory=64 * GIB),
        HostView("e", manages=False, free_memory=64 * GIB),
    ]


def test_replicas_prefer_hosts_that_have_the_model_then_idle_then_free_memory() -> None:
    assert place(hosts(), "pull", "llama3:latest", Placement(replicas=1)) == ["a"]
    assert place(hosts(), "pull", "llama3:latest", Placement(replicas=2)) == ["a", "c"]
    assert place(hosts(), "pull", "phi3:latest", Placement(replicas=2)) == ["c", "b"]
    assert place(hosts(), "pull", "phi3:latest", Placement()) == ["c"]  # the default: one replica


def test_all_and_zero_replicas_take_every_usable_ollama_host() -> None:
    every = ["c", "b", "a"]
    assert place(hosts(), "pull", "phi3:latest", Placement(every=True)) == every
    assert place(hosts(), "pull", "phi3:latest", Placement(replicas=0)) == every


def test_named_hosts_must_exist_and_manage_models() -> None:
    assert place(hosts(), "pull", "phi3:latest", Placement(hosts=("b", "b", "a"))) == ["b", "a"]
    with pytest.raises(InvalidRequest, match="no live worker 'zz'"):
        place(hosts(), "pull", "phi3:latest", Placement(hosts=("zz",)))
    with pytest.raises(InvalidRequest, match="OpenAI-compatible"):
        place(hosts(), "pull", "phi3:latest", Placement(hosts=("e",)))
    with pytest.raises(InvalidRequest, match="not alive"):
        place(hosts(), "pull", "phi3:latest", Placement(hosts=("d",)))


def test_delete_copy_and_load_go_only_where_the_model_is() -> None:
    assert place(hosts(), "delete", "llama3:latest", Placement()) == ["a"]
    assert place(hosts(), "load", "llama3:latest", Placement(replicas=3)) == ["a"]
    with pytest.raises(ModelNotFound):
        place(hosts(), "delete", "phi3:latest", Placement())
    with pytest.raises(InvalidRequest, match="does not have the model"):
        place(hosts(), "delete", "llama3:latest", Placement(hosts=("b",)))


def test_load_prefers_hosts_where_the_model_is_warm_and_exclude_skips_hosts() -> None:
    views = [
        HostView("a", models=frozenset({"m"})),
        HostView("b", models=frozenset({"m"}), loaded=frozenset({"m"})),
    ]
    assert place(views, "load", "m", Placement(replicas=1)) == ["b"]
    assert place(views, "pull", "m", Placement(replicas=1), exclude={"a"}) == ["b"]
    with pytest.raises(InvalidRequest):
        place(views, "pull", "m", Placement(replicas=1), exclude={"a", "b"})


def test_host_views_read_heartbeats() -> None:
    workers = [
        {"id": "a", "host": "h", "alive": True, "state": "active", "healthy": True, "models": ["m"], "loaded": [],
         "slots_busy": 2, "slots_total": 4, "ram_total": 10, "ram_used": 4, "backend": "ollama"},
        {"id": "b", "host": "h", "alive": True, "state": "draining", "healthy": True, "backend": "openai",
         "gpu": [{"memory_total_mib": 100, "memory_used_mib": 40}]},
        {"id": "gone", "alive": False},
    ]  # fmt: skip
    a, b = host_views(workers)
    assert (a.usable, a.manages, a.busy, a.free_memory, a.models) == (True, True, 0.5, 6, frozenset({"m"}))
    assert (b.usable, b.manages, b.free_memory) == (False, False, 60 * 2**20)
