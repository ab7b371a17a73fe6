"""The worker's exceptions: one tree under ``CorralError``, but for the documented internal control flow; and each
HTTP status of an engine's answer mapped to the class that decides what becomes of the job."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil

import pytest

import corral.worker
from corral.common import errors
from corral.worker import backends
from corral.worker.backends.pool import raise_for_status

pytestmark = pytest.mark.unit

INTERNAL = {"TransportError", "Fenced", "Cancelled"}  # control flow inside the worker, documented as such


def worker_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(corral.worker.__path__, "corral.worker."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                found[f"{info.name}.{name}"] = value
    return found


def test_every_worker_exception_is_a_corral_error_or_internal_control_flow() -> None:
    found = worker_exceptions()
    assert {name.rsplit(".", 1)[1] for name in found} >= INTERNAL | {"BackendError", "BackendAuthRefused"}
    for name, cls in found.items():
        if name.rsplit(".", 1)[1] in INTERNAL:
            assert "internal" in (cls.__doc__ or "").lower(), name
        else:
            assert issubclass(cls, errors.CorralError), name


def test_one_backend_unavailable() -> None:
    assert backends.BackendUnavailable is errors.BackendUnavailable
    assert issubclass(backends.BackendAuthRefused, errors.BackendUnavailable)
    assert not issubclass(backends.BackendUnavailable, backends.BackendError)


class Answer:
    def __init__(self, status: int) -> None:
        self.status_code = status

    async def read(self) -> bytes:
        return b'{"error": "no"}'


@pytest.mark.parametrize(
    ("status", "raised"),
    [
        (401, backends.BackendAuthRefused),
        (403, backends.BackendAuthRefused),
        (404, backends.BackendModelMissing),
        (429, backends.BackendUnavailable),
        (503, backends.BackendUnavailable),
        (400, backends.BackendError),
    ],
)
def test_an_engine_error_status_raises_its_class(status: int, raised: type[Exception]) -> None:
    with pytest.raises(backends.ENGINE_ERRORS) as caught:
        asyncio.run(raise_for_status(Answer(status)))  # type: ignore[arg-type]
    assert type(caught.value) is raised
    assert caught.value.message.endswith("no") and caught.value.context["status"] == status


def test_a_success_status_raises_nothing() -> None:
    asyncio.run(raise_for_status(Answer(200)))  # type: ignore[arg-type]
