"""The simulator's performance model: LRU eviction when memory is full, load counting, host speed."""

from __future__ import annotations

import asyncio

import pytest
from starlette.testclient import TestClient

from corral.simulator import ModelSpec, SimConfig, Simulator, build_app, config_from_args, parse_args

pytestmark = pytest.mark.unit


def sim(**config: object) -> Simulator:
    models = [ModelSpec(name=f"m{i}:latest", size_gb=8, load_time=1) for i in range(3)]
    return Simulator(SimConfig(models=models, memory_gb=16, max_loaded=5, time_scale=0.001, **config))  # type: ignore[arg-type]


async def use(s: Simulator, name: str) -> None:
    item = await s.acquire(s.spec(name), keep_alive=1e6)
    s.release(item, keep_alive=1e6)


def test_least_recently_used_model_is_evicted_when_memory_is_full() -> None:
    s = sim()

    async def scenario() -> None:
        await use(s, "m0")
        await use(s, "m1")
        await use(s, "m0")  # m1 is now the least recently used
        await use(s, "m2")

    asyncio.run(scenario())
    assert sorted(s.loaded) == ["m0:latest", "m2:latest"]
    assert (s.stats["loads"], s.stats["unloads"]) == (3, 1)
    kinds = [(kind, name) for _, kind, name in s.history]
    assert kinds == [
        ("load", "m0:latest"),
        ("load", "m1:latest"),
        ("evict", "m1:latest"),
        ("load", "m2:latest"),
    ]


def test_concurrent_requests_share_one_load() -> None:
    s = sim()

    async def scenario() -> None:
        await asyncio.gather(*(use(s, "m0") for _ in range(10)))

    asyncio.run(scenario())
    assert s.stats["loads"] == 1


def test_speed_scales_every_delay() -> None:
    s = sim(speed=2.0)
    spec = s.spec("m0")
    assert s.load_delay(spec) == 0.5 and s.token_interval(spec) == pytest.approx(1 / 100)
    assert s.first_token_delay(spec) == pytest.approx(spec.ttft / 2)


def test_command_line_specs_and_stats_endpoint() -> None:
    args = parse_args(
        ["--models", "a,b", "--speed", "1.5", "--specs", '{"a": {"size_gb": 2, "load_time": 9}}']
    )
    config = config_from_args(args)
    assert config.speed == 1.5 and (config.models[0].size_gb, config.models[0].load_time) == (2, 9)
    assert config.models[1].load_time == args.load_time
    config.time_scale = 0.001  # keep-alive (300 s) scales too: 0.3 s
    with TestClient(build_app(config)) as client:
        body = {"model": "a", "prompt": "hi", "stream": False, "keep_alive": -1}
        assert client.post("/api/generate", json=body).status_code == 200
        stats = client.get("/sim/stats").json()
        assert stats["loads"] == 1 and stats["loaded"] == ["a:latest"]
        assert [m["name"] for m in client.get("/api/ps").json()["models"]] == ["a:latest"]
