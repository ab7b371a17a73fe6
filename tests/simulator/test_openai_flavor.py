"""The simulator's OpenAI flavour answers as the real servers do where Corral depends on it."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from corral.simulator import ModelSpec, SimConfig
from corral.simulator.openai import build_openai_app

pytestmark = pytest.mark.unit
PROMPT = " ".join(f"w{i}" for i in range(30))  # the reply repeats it: 32 tokens


def test_completions_stop_at_16_tokens_unless_max_tokens_says_otherwise() -> None:
    """OpenAI's /v1/completions default (vLLM's and llama.cpp's too): 16 tokens; ``null`` lifts the limit."""
    config = SimConfig(models=[ModelSpec(name="m:latest", ttft=0, tps=1e6, load_time=0)], time_scale=0.001)
    with TestClient(build_openai_app(config)) as client:

        def usage(**extra: object) -> tuple[int, str]:
            answer = client.post("/v1/completions", json={"model": "m", "prompt": PROMPT, **extra}).json()
            return answer["usage"]["completion_tokens"], answer["choices"][0]["finish_reason"]

        assert usage() == (16, "length")
        assert usage(max_tokens=None) == (32, "stop")
        assert usage(max_tokens=4) == (4, "length")
        chat = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
        assert client.post("/v1/chat/completions", json=chat).json()["usage"]["completion_tokens"] == 32
