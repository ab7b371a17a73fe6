"""A real inference engine for the tests and the benchmark: llama.cpp through llama-cpp-python's OpenAI-compatible
server (``python -m llama_cpp.server``, the ``corral[engine]`` extra), serving a tiny model made at test time."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import psutil

from ..support import Child, free_port
from .tinymodel import write_model

START_TIMEOUT = (
    60.0  # python, FastAPI and llama.cpp's import on a loaded 2-core machine; the model loads in ms
)


class Engine(Child):
    """One ``llama_cpp.server`` process serving one model under ``alias`` on a free loopback port."""

    def __init__(
        self, model: Path, alias: str, log_dir: Path, embedding: bool = False, context: int = 2048
    ) -> None:
        self.model, self.alias, self.embedding, self.context = model, alias, embedding, context
        self.port = free_port()
        super().__init__(f"engine-{alias}-{self.port}", self.server_argv(), dict(os.environ), log_dir,
                         command=(sys.executable, "-m", "llama_cpp.server"))  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """What a worker's ``CORRAL_BACKEND_URL`` is set to."""
        return self.base + "/v1"

    def server_argv(self) -> list[str]:
        argv = ["--model", str(self.model), "--model_alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.context), "--n_threads", "1",
                "--n_threads_batch", "1", "--seed", "1",
                # by default a new request (the worker's model-list poll too) cuts the running stream short
                "--interrupt_requests", "false"]  # fmt: skip
        if self.embedding:
            argv += ["--embedding", "true"]
        return argv

    def start(self) -> Engine:
        """Start the server (``wait_ready`` waits for it: engines started together load side by side)."""
        super().start()
        return self

    def wait_ready(self) -> Engine:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"llama_cpp.server did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def cpu_seconds(self) -> float:
        """CPU time the engine has used so far (user + system, its threads included)."""
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)


def tiny_engine(tmp: Path, alias: str, seed: int = 0, embedding: bool = False, context: int = 2048) -> Engine:
    """A starting engine serving a freshly written tiny model (the same ``seed``, the same weights)."""
    model = tmp / f"tiny-{seed}{'-embed' if embedding else ''}.gguf"
    if not model.exists():
        write_model(model, seed=seed, pooling=embedding)
    return Engine(model, alias, tmp, embedding=embedding, context=context).start()
