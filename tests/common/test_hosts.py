"""Hosts registered by URL (common/hosts.py): the spec's checks and defaults, and secrets kept out of sight."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis
import pytest
from pydantic import ValidationError

from corral.common import keys
from corral.common.hosts import (
    HostSpec,
    hosts_from_config,
    load_hosts,
    public_hosts,
    register_hosts,
    remove_host,
)
from corral.common.settings import Settings

pytestmark = pytest.mark.unit

TOKEN = "tok-5e3c7a91d2"


def test_defaults_name_and_kind_from_the_url() -> None:
    host = HostSpec(url="http://gpu-1:11434/")
    assert (host.name, host.kind, host.url, host.slots) == ("gpu-1-11434", "ollama", "http://gpu-1:11434", 4)
    vllm = HostSpec(url="https://vllm.lan/v1", name="vllm")
    assert (vllm.name, vllm.kind) == ("vllm", "openai")
    assert HostSpec(url="https://vllm.lan/v1", kind="ollama").kind == "ollama"  # asked for: kept
    assert HostSpec(url="http://a", token="", headers=" ").public()["token"] is False


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "ftp://x"},
        {"url": "gpu-1:11434"},
        {"url": "http://x", "name": "has space"},
        {"url": "http://x", "slots": 0},
        {"url": "http://x", "kind": "vllm"},
        {"url": "http://x", "headers": "no-equals-sign"},
        {"url": "http://x", "extra": 1},
    ],
)
def test_refuses_what_cannot_be_served(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HostSpec(**fields)


def test_secrets_never_in_repr_or_public_view() -> None:
    host = HostSpec(url="https://user:pw-9z@gpu-2:11434", token=TOKEN, headers=f"X-Key={TOKEN},X-Team=a")
    shown = json.dumps(host.public()) + repr(host) + str(host)
    assert TOKEN not in shown and "pw-9z" not in shown
    assert host.public()["url"] == "https://user:***@gpu-2:11434"
    assert host.public()["token"] is True and host.public()["headers"] == ["X-Key", "X-Team"]


def test_worker_settings_take_the_host_engine_and_keep_the_rest() -> None:
    base = Settings(redis_url="redis://127.0.0.1:1/0", heartbeat_interval=0.5, worker_id="fleet-1")
    host = HostSpec(url="https://vllm.lan/v1", name="v", token=TOKEN, headers="X-A=1", slots=9, weight=2)
    mine = host.worker_settings(base)
    assert (mine.worker_id, mine.engine_url, mine.engine_kind, mine.worker_slots) == (
        "v",
        host.url,
        "openai",
        9,
    )
    assert mine.worker_weight == 2 and mine.heartbeat_interval == 0.5 and mine.redis_url == base.redis_url
    assert mine.engine_headers() == {"X-A": "1", "Authorization": f"Bearer {TOKEN}"}
    assert base.worker_id == "fleet-1" and base.backend_token is None


def test_register_load_remove_round_trip() -> None:
    async def scenario() -> None:
        client = fakeredis.FakeAsyncRedis()
        pubsub = client.pubsub()
        await pubsub.subscribe(keys.HOSTS_CHANNEL)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        hosts = [HostSpec(url="http://a:1", token=TOKEN), HostSpec(url="http://b:2", name="b", slots=2)]
        assert await register_hosts(client, hosts) == ["a-1", "b"]
        assert (await pubsub.get_message(timeout=1))["data"] == b"changed"  # type: ignore[index]
        assert await load_hosts(client) == {"a-1": hosts[0], "b": hosts[1]}
        public = await public_hosts(client)
        assert [h["name"] for h in public] == ["a-1", "b"] and TOKEN not in json.dumps(public)
        assert TOKEN not in str(await client.hgetall(keys.HOSTS))
        assert TOKEN in str(await client.hget(keys.HOST_SECRETS, "a-1"))
        assert await remove_host(client, "a-1") is True
        assert await remove_host(client, "a-1") is False
        assert list(await load_hosts(client)) == ["b"] and await client.hget(keys.HOST_SECRETS, "a-1") is None
        await client.hset(keys.HOSTS, "broken", b"{not json")
        assert list(await load_hosts(client)) == ["b"]  # a record that does not parse is left out
        await pubsub.aclose()
        await client.aclose()

    asyncio.run(scenario())


def test_hosts_from_a_config_file() -> None:
    entries = [
        {"url": "http://gpu-1:11434"},
        {"url": "https://vllm/v1", "name": "v", "token": TOKEN, "slots": 8},
    ]
    hosts = hosts_from_config(entries)
    assert [(h.name, h.kind, h.slots) for h in hosts] == [("gpu-1-11434", "ollama", 4), ("v", "openai", 8)]
    with pytest.raises(ValueError, match=r"hosts\[1\]: slots: .*greater than or equal to 1") as bad:
        hosts_from_config([{"url": "http://a"}, {"url": "http://b", "slots": 0, "token": TOKEN}])
    assert TOKEN not in str(bad.value)
